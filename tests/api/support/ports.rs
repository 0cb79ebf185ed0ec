//! Loopback ports for the real servers the tests start (rsyslog, the Kafka broker) on a port
//! they are handed: one outside the kernel's ephemeral range, which no other test's listener
//! (they bind port 0) and no outgoing connection can take between the pick and the start, or
//! between a stop and a restart on the same port; and never one this process handed out
//! before, so two tests are not given the same port.

use std::{collections::BTreeSet, sync::Mutex};

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port outside the kernel's ephemeral range (`ip_local_port_range`), never handed
/// out before in this process, that nothing is bound to now.
pub fn outside_the_ephemeral_range() -> u16 {
    let (start, end) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut bounds = t.split_whitespace().map(|b| b.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    // Below the range, above the privileged ports; above the range when that is too narrow.
    let (low, high) = if start >= 4096 {
        (start.saturating_sub(12_768).max(1024), start)
    } else {
        (end.saturating_add(1), u16::MAX)
    };
    assert!(
        high > low,
        "no ports outside the ephemeral range {start}–{end}"
    );
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = rand::random::<u16>() % (high - low) + low;
        if !handed_out.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {low} and {high}");
}

/// Whether a socket listens on 127.0.0.1:`port`, from `/proc/net/tcp` (state 0A is LISTEN).
pub fn listening_on(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            let mut columns = line.split_whitespace();
            let local = columns.nth(1);
            let state = columns.nth(1);
            local == Some(wanted.as_str()) && state == Some("0A")
        })
    })
}
