//! The listening sockets: a backlog above the standard library's 128, and
//! with several event loops one socket each on the same port
//! (SO_REUSEPORT), so the kernel spreads new connections over the loops
//! instead of waking every loop for each one.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

/// `count` non-blocking listeners on `addr` (its first address), each with
/// a queue of `backlog` connections not yet accepted (the kernel caps it
/// at `net.core.somaxconn`). With port 0, all get the port the first one
/// was given.
pub fn bind(addr: &str, backlog: u32, count: usize) -> io::Result<Vec<TcpListener>> {
    let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    })?;
    let share = count > 1;
    let first = listener(addr, backlog, share)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(listener(bound, backlog, share)?);
    }
    Ok(all)
}

fn listener(addr: SocketAddr, backlog: u32, share: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and mio do: a restart may bind while old connections linger
    // in TIME_WAIT.
    s.set_reuse_address(true)?;
    if share {
        s.set_reuse_port(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}
