//! What /proc tells about a process (memory, fds, CPU, sockets) and about
//! the host's IPv4 TCP sockets (state, queues, inodes).

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmData`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process.
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces: fields start after ") ".
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `st` of /proc/net/tcp: established, listening, waiting out TIME_WAIT,
/// FIN received.
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;
pub const TCP_TIME_WAIT: u8 = 0x06;
/// The peer's FIN has arrived; this side is still open.
pub const TCP_CLOSE_WAIT: u8 = 0x08;

/// One IPv4 TCP socket of this host, from /proc/net/tcp.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    pub local_port: u16,
    pub peer_port: u16,
    /// `st`: 0x01 established, 0x0A listening, ... (include/net/tcp_states.h).
    pub state: u8,
    /// Bytes in the send and receive queues.
    pub tx: u64,
    pub rx: u64,
    /// 0 while a connection waits in the listen queue, unaccepted.
    pub inode: u64,
}

/// Every IPv4 TCP socket of this host.
pub fn all_tcp_sockets() -> Vec<TcpSocket> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |a: &str| u16::from_str_radix(a.rsplit_once(':')?.1, 16).ok();
    let hex = |v: &str| u64::from_str_radix(v, 16).ok();
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let (tx, rx) = f[4].split_once(':')?;
            Some(TcpSocket {
                local_port: port_of(f[1])?,
                peer_port: port_of(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                tx: hex(tx)?,
                rx: hex(rx)?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// The IPv4 TCP sockets of this host whose local port is `port`.
pub fn tcp_sockets(port: u16) -> Vec<TcpSocket> {
    let mut all = all_tcp_sockets();
    all.retain(|s| s.local_port == port);
    all
}

/// Receive and send queue bytes (`rx`, `tx`) of every established TCP
/// socket on this host whose local port is `port` (the server's side of
/// its connections).
pub fn server_socket_queues(port: u16) -> Vec<(u64, u64)> {
    tcp_sockets(port)
        .into_iter()
        .filter(|s| s.state == TCP_ESTABLISHED)
        .map(|s| (s.rx, s.tx))
        .collect()
}

/// Receive and send queue bytes (`rx`, `tx`) of every established TCP
/// socket on this host connected to remote port `port` (the clients' side
/// of a server's connections).
pub fn peer_socket_queues(port: u16) -> Vec<(u64, u64)> {
    all_tcp_sockets()
        .into_iter()
        .filter(|s| s.peer_port == port && s.state == TCP_ESTABLISHED)
        .map(|s| (s.rx, s.tx))
        .collect()
}

/// Inodes of the sockets process `pid` holds a descriptor for (cheap to
/// poll, unlike /proc/net/tcp on a host with many sockets).
pub fn proc_socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}
