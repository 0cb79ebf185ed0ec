//! Loopback ports for the real servers the tests start (rsyslog, the Kafka broker) on a port
//! they are handed: one outside the kernel's ephemeral range, which no other test's listener
//! (they bind port 0) and no outgoing connection can take between the pick and the start, or
//! between a stop and a restart on the same port.

/// A loopback port below the kernel's ephemeral range (`ip_local_port_range`) that nothing is
/// bound to now.
pub fn outside_the_ephemeral_range() -> u16 {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let low = 20_000.min(ephemeral_start / 2);
    for _ in 0..100 {
        let port = rand::random::<u16>() % (ephemeral_start - low) + low;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {low} and {ephemeral_start}");
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
