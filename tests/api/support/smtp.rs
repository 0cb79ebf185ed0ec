//! A real, minimal SMTP server on loopback that keeps every message it receives.
//!
//! It speaks enough of RFC 5321 for a standard client (EHLO/HELO, MAIL, RCPT, DATA with
//! dot-stuffing, RSET, NOOP, QUIT) and can be stopped and started again on the same port to
//! play an outage.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// A running sink.
pub struct SmtpSink {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl SmtpSink {
    /// Starts on a free loopback port.
    pub async fn start() -> SmtpSink {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Arc::default()).await
    }

    async fn start_on(addr: SocketAddr, messages: Arc<Mutex<Vec<Received>>>) -> SmtpSink {
        let listener = TcpListener::bind(addr).await.expect("bind the SMTP sink");
        let addr = listener.local_addr().unwrap();
        let store = messages.clone();
        let server = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, store.clone()));
            }
        });
        SmtpSink {
            addr,
            messages,
            server: Some(server),
        }
    }

    /// `smtp://127.0.0.1:<port>` for `CLOUDPKI_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Stops listening (connections are refused) but keeps what was received.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        // The aborted task drops the listener; give the runtime a moment to close it.
        tokio::task::yield_now().await;
        let mut again = Self::start_on(self.addr, self.messages.clone()).await;
        self.server = again.server.take();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(socket: tokio::net::TcpStream, store: Arc<Mutex<Vec<Received>>>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let mut to = Vec::new();
    if write
        .write_all(b"220 sink.test ESMTP ready\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-sink.test\r\n250 8BITMIME\r\n"
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if command.starts_with("MAIL FROM") {
            to.clear();
            b"250 OK\r\n"
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..]
                .trim()
                .trim_start_matches(':')
                .trim()
                .trim_matches(['<', '>'])
                .to_owned();
            to.push(address);
            b"250 OK\r\n"
        } else if command == "RSET" {
            to.clear();
            b"250 OK\r\n"
        } else if command == "DATA" {
            if write
                .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut data = Vec::new();
            loop {
                let mut l = String::new();
                match lines.read_line(&mut l).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if l == ".\r\n" || l == ".\n" {
                    break;
                }
                let l = l.strip_prefix('.').unwrap_or(&l);
                data.extend_from_slice(l.as_bytes());
            }
            let parsed = mail_parser::MessageParser::default()
                .parse(&data)
                .expect("a MIME message");
            store.lock().unwrap().push(Received {
                to: std::mem::take(&mut to),
                subject: parsed.subject().unwrap_or_default().to_owned(),
                text: parsed
                    .body_text(0)
                    .map(|t| t.into_owned())
                    .unwrap_or_default(),
                html: parsed
                    .body_html(0)
                    .map(|t| t.into_owned())
                    .unwrap_or_default(),
            });
            b"250 OK queued\r\n"
        } else if command == "QUIT" {
            let _ = write.write_all(b"221 Bye\r\n").await;
            return;
        } else {
            b"502 Command not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
