//! RELP, rsyslog's Reliable Event Logging Protocol, on an open (TLS) connection: the session
//! is opened with an offer, every message goes as a `syslog` command and is acknowledged by
//! the receiver (`rsp 200`), then the session is closed. A message is delivered once it is
//! acknowledged: that is the proof plain syslog cannot give. A session cut short reports how
//! many were, in order, so that only the rest is sent again.
//!
//! Frames: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`, transaction numbers counting from 1.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::service::{
    explain_tls, is_tls_alert, Closing, SyslogError, Unreached, CLOSE_WAIT, CONNECT_TIMEOUT,
    WRITE_TIMEOUT,
};
use crate::domain::syslog::SyslogHost;

/// How many messages go out before their acknowledgements are read.
const WINDOW: usize = 128;

/// The largest answer a receiver may send (its text is short; anything longer is not RELP).
const MAX_ANSWER: usize = 64 * 1024;

/// The session offer: protocol version 0, the one command we use.
fn offer() -> String {
    format!(
        "relp_version=0\nrelp_software=cloudpki,{},https://github.com/cloudpki\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether an open answer's offers (`200 OK` then one `name=value` line each) list the
/// `syslog` command.
fn offers_syslog(answer: &[u8]) -> bool {
    String::from_utf8_lossy(answer)
        .lines()
        .skip(1)
        .any(|offer| {
            offer
                .strip_prefix("commands=")
                .is_some_and(|commands| commands.split(',').any(|c| c.trim() == "syslog"))
        })
}

/// One frame, as written.
pub fn frame(txnr: u64, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, txnr, command, data);
    out
}

/// Appends one frame to `out` (a window of frames is written at once).
fn frame_into(out: &mut Vec<u8>, txnr: u64, command: &str, data: &[u8]) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The messages of an octet-counted body (RFC 6587 framing, as [`super::frame`] writes it).
pub fn unframe(framed: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut messages = Vec::new();
    let mut rest = framed;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("a message without its length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or("a message length that is not a number")?;
        let body = rest
            .get(space + 1..space + 1 + len)
            .ok_or("a message shorter than its length")?;
        messages.push(body);
        rest = &rest[space + 1 + len..];
    }
    Ok(messages)
}

/// A frame the receiver sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub txnr: u64,
    pub command: String,
    pub data: Vec<u8>,
}

impl Answer {
    /// Whether it acknowledges (`rsp` with status 200, then a space, a line break or nothing).
    fn ok(&self) -> bool {
        self.command == "rsp"
            && self.data.starts_with(b"200")
            && matches!(self.data.get(3), None | Some(b' ' | b'\n'))
    }

    /// Its text, for an error message.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.data)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    }
}

/// Reads frames off a stream.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// The next frame; an error when the stream ends or what arrives is not RELP.
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> std::io::Result<Answer> {
        loop {
            match parse(&self.buf) {
                Ok(Some((answer, used))) => {
                    self.buf.drain(..used);
                    return Ok(answer);
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One frame from the front of `buf` and the bytes it took; `None` until it is complete.
fn parse(buf: &[u8]) -> Result<Option<(Answer, usize)>, String> {
    let header_end = buf.len().min(64);
    let mut fields = Vec::new();
    let mut at = 0;
    // TXNR, COMMAND and DATALEN, each followed by a space (DATALEN possibly by the LF).
    for _ in 0..3 {
        let Some(len) = buf[at..header_end]
            .iter()
            .position(|b| *b == b' ' || *b == b'\n')
        else {
            if buf.len() >= 64 {
                return Err("not a RELP frame (no header)".to_owned());
            }
            return Ok(None);
        };
        fields.push(&buf[at..at + len]);
        at += len + 1;
        if buf[at - 1] == b'\n' {
            break;
        }
    }
    let [txnr, command, datalen] = fields[..] else {
        return Err("not a RELP frame (a short header)".to_owned());
    };
    let number = |field: &[u8]| {
        std::str::from_utf8(field)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
    };
    let txnr = number(txnr).ok_or("not a RELP frame (its number)")?;
    let datalen = usize::try_from(number(datalen).ok_or("not a RELP frame (its length)")?)
        .map_err(|_| "a RELP frame too long")?;
    if datalen > 0 && buf[at - 1] == b'\n' {
        return Err("a RELP frame whose data is missing".to_owned());
    }
    if datalen > MAX_ANSWER {
        return Err(format!(
            "a RELP answer of {datalen} bytes, more than expected"
        ));
    }
    let command = String::from_utf8_lossy(command).into_owned();
    if datalen == 0 {
        // `0 serverclose 0\n`: the LF ended the header.
        if buf[at - 1] == b'\n' {
            return Ok(Some((
                Answer {
                    txnr,
                    command,
                    data: Vec::new(),
                },
                at,
            )));
        }
        return match buf.get(at) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((
                Answer {
                    txnr,
                    command,
                    data: Vec::new(),
                },
                at + 1,
            ))),
            Some(_) => Err("a RELP frame without its trailer".to_owned()),
        };
    }
    let Some(data) = buf.get(at..at + datalen) else {
        return Ok(None);
    };
    match buf.get(at + datalen) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((
            Answer {
                txnr,
                command,
                data: data.to_vec(),
            },
            at + datalen + 1,
        ))),
        Some(_) => Err("a RELP frame without its trailer".to_owned()),
    }
}

/// Sends an octet-counted batch as a RELP session: open, every message acknowledged, close.
pub(super) async fn exchange<S: Closing>(
    stream: &mut S,
    framed: &[u8],
    host: &SyslogHost,
) -> Result<(), SyslogError> {
    let messages = unframe(framed).map_err(|e| {
        SyslogError::not_sent(
            Unreached::Failed,
            format!("the batch could not be read back ({e})"),
        )
    })?;
    let mut reader = Reader::default();
    // Open: nothing of the batch has left yet.
    let opened = async {
        stream
            .write_all(&frame(1, "open", offer().as_bytes()))
            .await?;
        stream.flush().await?;
        reader.next(stream).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
        Ok(Ok(answer)) if answer.txnr == 1 && answer.ok() => {
            // librelp's own client checks this too: a server that does not take the `syslog`
            // command would refuse every message.
            if !offers_syslog(&answer.data) {
                return Err(SyslogError::Refused(format!(
                    "{host} opened a RELP session but does not offer the syslog command; check that the port is an imrelp input"
                )));
            }
        }
        Ok(Ok(answer)) => {
            return Err(SyslogError::Refused(format!(
                "{host} refused the RELP session ({}); check that the port is an imrelp input",
                answer.text()
            )))
        }
        // A TLS alert: the receiver refused us (our certificate, under TLS 1.3).
        Ok(Err(e)) if is_tls_alert(&e) => return Err(SyslogError::Tls(explain_tls(host, &e))),
        // It hung up before answering (restarting, at its session limit): nothing of the batch
        // left; try again later.
        Ok(Err(e)) => {
            return Err(SyslogError::not_sent(
                Unreached::Failed,
                format!("{host} closed the connection before opening a RELP session ({e})"),
            ))
        }
        Err(_) => {
            return Err(SyslogError::Refused(format!(
                "{host} did not answer the RELP open within {} s; a plain syslog input takes it for a message and never answers: check that the port is an imrelp input",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    }
    let total = messages.len();
    let mut acked = 0;
    let sent = async {
        let mut txnr = 1;
        let mut out = Vec::new();
        for window in messages.chunks(WINDOW) {
            let first = txnr + 1;
            out.clear();
            for message in window {
                txnr += 1;
                frame_into(&mut out, txnr, "syslog", message);
            }
            stream.write_all(&out).await?;
            stream.flush().await?;
            for expected in first..=txnr {
                let answer = reader.next(stream).await?;
                if answer.txnr != expected || !answer.ok() {
                    return Err(std::io::Error::other(format!(
                        "message {} of {total} was answered `{} {} {}`",
                        expected - 1,
                        answer.txnr,
                        answer.command,
                        answer.text()
                    )));
                }
                acked += 1;
            }
        }
        Ok::<u64, std::io::Error>(txnr)
    };
    let last = match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
        Ok(Ok(last)) => last,
        Ok(Err(e)) => {
            return Err(SyslogError::MaybeSent {
                acknowledged: acked,
                reason: format!("{acked} of {total} messages were acknowledged, then: {e}; the receiver may have some of the others"),
            })
        }
        Err(_) => {
            return Err(SyslogError::MaybeSent {
                acknowledged: acked,
                reason: format!(
                    "{acked} of {total} messages were acknowledged within {} s; the receiver may have some of the others",
                    WRITE_TIMEOUT.as_secs()
                ),
            })
        }
    };
    // Every message is acknowledged: the batch is delivered, whatever the close does.
    let closed = async {
        stream.write_all(&frame(last + 1, "close", b"")).await?;
        stream.flush().await?;
        loop {
            let answer = reader.next(stream).await?;
            if answer.txnr == last + 1 || answer.command == "serverclose" {
                break;
            }
        }
        stream.close().await
    };
    if let Err(e) = tokio::time::timeout(CLOSE_WAIT, closed)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::debug!(%host, error = %e, "the RELP session did not close cleanly after every message was acknowledged");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_and_read_back() {
        assert_eq!(frame(1, "open", b"a"), b"1 open 1 a\n");
        assert_eq!(frame(3, "close", b""), b"3 close 0\n");
        let two = b"2 rsp 6 200 OK\n0 serverclose 0\n";
        let (first, used) = parse(two).unwrap().unwrap();
        assert_eq!(
            (first.txnr, first.command.as_str(), first.ok()),
            (2, "rsp", true)
        );
        let (second, rest) = parse(&two[used..]).unwrap().unwrap();
        assert_eq!((second.txnr, second.command.as_str()), (0, "serverclose"));
        assert_eq!(used + rest, two.len());
        assert_eq!(parse(b"2 rsp 6 200").unwrap(), None, "incomplete");
        assert!(parse(b"2 rsp 6 200 OKx").is_err(), "no trailer");
        assert!(
            parse(b"2 rsp 6\n200 OK\n").is_err(),
            "data after a line break"
        );
        let (answer, _) = parse(b"2 rsp 7 2000 OK\n").unwrap().unwrap();
        assert!(!answer.ok(), "2000 is not 200");
        let (answer, _) = parse(b"2 rsp 3 200\n").unwrap().unwrap();
        assert!(answer.ok(), "200 alone");
        assert!(
            parse(b"<110>1 2026-12-06T00:00:00Z host app - - - not relp at all, long line")
                .is_err()
        );
    }

    #[test]
    fn an_open_answer_must_offer_the_syslog_command() {
        let librelp = b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog";
        assert!(offers_syslog(librelp));
        assert!(offers_syslog(b"200 OK\ncommands=eventlog, syslog"));
        assert!(!offers_syslog(b"200 OK"), "no offers");
        assert!(!offers_syslog(b"200 OK\nrelp_version=0\ncommands="));
        assert!(!offers_syslog(b"200 OK\ncommands=syslogx"));
        assert!(!offers_syslog(b"200 OK syslog"), "not an offer line");
    }

    #[test]
    fn an_octet_counted_batch_is_split_back_into_its_messages() {
        let mut framed = super::super::frame("<110>1 a");
        framed.extend(super::super::frame("<110>1 é b"));
        assert_eq!(
            unframe(&framed).unwrap(),
            vec![&b"<110>1 a"[..], "<110>1 é b".as_bytes()]
        );
        assert!(unframe(b"9 short").is_err());
    }
}
