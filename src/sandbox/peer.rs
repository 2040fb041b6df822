//! Who is on the other end of a loopback connection. The sandbox listens on 127.0.0.1, which
//! every local user can reach: without this check another user of the machine read the
//! attachments (the files the user dropped into `outbox demo`'s folders), the issued tokens and
//! the client secret through the admin and Graph APIs, and could inject faults. On Linux the
//! connecting socket's owner is in `/proc/net/tcp`; a connection from another user (root
//! aside) is closed unanswered. Elsewhere it cannot be told and every local connection is
//! served.

use std::net::SocketAddr;

/// Whether the connection from `peer` to our `local` address may be served: its socket belongs
/// to this process's user or to root, or its owner cannot be told here.
pub fn allowed(local: SocketAddr, peer: SocketAddr) -> Result<(), u32> {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::process::geteuid().as_raw();
        match owner(local, peer) {
            Some(uid) if uid != me && uid != 0 => Err(uid),
            _ => Ok(()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (local, peer);
        Ok(())
    }
}

/// The uid owning the socket `peer` connected to `local`, from `/proc/net/tcp` (or `tcp6`):
/// its row is the one whose local address is `peer` and remote address `local`. `None` when
/// the table cannot be read; `Some(u32::MAX)` (nobody's) when it has no such row.
#[cfg(target_os = "linux")]
fn owner(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    Some(owner_in(&text, local, peer).unwrap_or(u32::MAX))
}

/// [`owner`] in the text of a `/proc/net/tcp` table.
#[cfg(any(target_os = "linux", test))]
fn owner_in(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (hex_addr(peer), hex_addr(local));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == want_local && f[2] == want_remote)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// An address as `/proc/net/tcp` prints it: the address's bytes as the machine's own 32-bit
/// words in hex, a colon, the port in hex.
#[cfg(any(target_os = "linux", test))]
fn hex_addr(a: SocketAddr) -> String {
    let ip = match a {
        SocketAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.ip().octets())),
        SocketAddr::V6(v6) => v6
            .ip()
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_connecting_sockets_owner() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let lo = hex_addr(local);
        let pe = hex_addr(peer);
        if cfg!(target_endian = "little") {
            assert_eq!(lo, "0100007F:1F90");
        }
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n\
             1: {lo} {pe} 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n\
             2: {pe} {lo} 01 00000000:00000000 00:00000000 00000000  65534        0 3 1\n"
        );
        assert_eq!(owner_in(&table, local, peer), Some(65534));
        let other: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(owner_in(&table, local, other), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_connection_of_our_own_is_allowed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(owner(l.local_addr().unwrap(), peer), Some(me));
        assert!(allowed(l.local_addr().unwrap(), peer).is_ok());
    }
}
