//! The `wsloop` binary as a process: `BinServer` (`wsloop serve` on a free
//! port), one-shot runs (`run_wsloop`) and interactive client sessions
//! (`client_session`). Only children started here are ever killed, each by
//! its own PID.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::net::free_port;
use super::procfs::{proc_fd_count, proc_socket_inodes, proc_status_kib, tcp_sockets, TCP_LISTEN};
use super::wait::wait_child;

/// `wsloop serve` on a free loopback port, killed when dropped.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl BinServer {
    /// Starts `wsloop serve --addr 127.0.0.1:PORT <args>` and waits until
    /// it accepts connections.
    pub fn spawn(args: &[&str]) -> BinServer {
        Self::start("wsloop serve", |addr| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
            cmd.args(["serve", "--addr", &addr.to_string()]).args(args);
            cmd
        })
    }

    /// Like [`BinServer::spawn`], with `env` set in the server's
    /// environment (and every other `WSLOOP_*` variable of this process
    /// removed, so only what the test says applies).
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> BinServer {
        Self::start("wsloop serve (with environment)", |addr| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsloop"));
            for (k, _) in std::env::vars() {
                if k.starts_with("WSLOOP_") {
                    cmd.env_remove(k);
                }
            }
            cmd.args(["serve", "--addr", &addr.to_string()])
                .args(args)
                .envs(env.iter().copied());
            cmd
        })
    }

    /// Like [`BinServer::spawn`], with the server's open-file limit lowered
    /// to `nofile` (`ulimit -n` in a shell that then execs the server, so
    /// the child's pid is the server's).
    pub fn spawn_with_fd_limit(nofile: u32, args: &[&str]) -> BinServer {
        Self::start(&format!("wsloop serve with ulimit -n {nofile}"), |addr| {
            let mut script = format!(
                "ulimit -n {nofile} && exec '{}' serve --addr {addr}",
                env!("CARGO_BIN_EXE_wsloop")
            );
            for a in args {
                assert!(!a.contains('\''), "argument with a quote: {a}");
                script.push_str(&format!(" '{a}'"));
            }
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script]);
            cmd
        })
    }

    /// Runs what `command` makes for a free port, its stderr to a log, and
    /// waits until it accepts connections. Tries another port if it exits
    /// first (most likely the port was taken between probe and bind).
    fn start(what: &str, command: impl Fn(SocketAddr) -> Command) -> BinServer {
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("wsloop-serve-{}-{port}.log", std::process::id()));
            let log_file = std::fs::File::create(&log).expect("create server log");
            let child = command(addr)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
            let mut srv = BinServer { child, addr, log };
            if srv.wait_ready(attempt) {
                return srv;
            }
        }
        panic!("could not start {what}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server accepts connections and has closed the
    /// connections that showed it. False if the server exited.
    fn wait_ready(&mut self, attempt: usize) -> bool {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "wsloop serve exited early ({status}), attempt {attempt}: {}",
                    self.log_text()
                );
                return false;
            }
            if let Ok(probe) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                self.hang_up(probe);
                return true;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "wsloop serve did not accept within 10 s: {}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hangs up the readiness probe and waits for the server to close its
    /// side, so that counts of its descriptors taken next do not include
    /// the probe. Panics if it does not within 10 s.
    fn hang_up(&self, mut probe: TcpStream) {
        probe
            .shutdown(Shutdown::Write)
            .expect("shut down the probe");
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        match probe.read(&mut [0u8; 64]) {
            // EOF, or a reset: the server has let go of it either way.
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "readiness probe: wanted the server to close it, got {other:?}: {}",
                self.log_text()
            ),
        }
    }

    /// Inodes of the sockets the server holds a descriptor for.
    pub fn socket_inodes(&self) -> Vec<u64> {
        proc_socket_inodes(self.pid())
    }

    /// The inode of the server's side of `client`'s connection (0 until
    /// the server has accepted it).
    pub fn server_side_inode(&self, client: &TcpStream) -> u64 {
        let ours = client.local_addr().expect("client address").port();
        tcp_sockets(self.addr.port())
            .into_iter()
            .find(|s| s.peer_port == ours && s.state != TCP_LISTEN)
            .map_or(0, |s| s.inode)
    }

    /// Sends a signal by name (TERM, INT, KILL) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, within)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// VmRSS of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS").expect("VmRSS of the server")
    }

    /// Open fds of the server.
    pub fn fds(&self) -> usize {
        proc_fd_count(self.pid())
    }

    /// Panics if the server's log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(
            !log.contains("panicked"),
            "the server panicked; log:\n{log}"
        );
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // SIGKILL to this child's PID only
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

// ------------------------------------------------------- one-shot runs

/// What a run of the `wsloop` binary printed, and its exit code.
pub struct BinRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for BinRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `wsloop SUB ARGS` without RUST_LOG, stdout and stderr piped (stdin is
/// the caller's to set).
pub fn wsloop_command(sub: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    c.arg(sub)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Reads `r` to its end on a thread.
pub fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// Waits up to `within` for `child` to exit and returns what `out` and
/// `err` (its stdout and stderr) read. If it does not exit in time, kills
/// it (this child's PID only) and panics with both, naming `what`.
pub fn finish_run(
    child: &mut Child,
    within: Duration,
    what: &str,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
) -> BinRun {
    match wait_child(child, within) {
        Some(st) => BinRun {
            code: st.code(),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        None => {
            let _ = child.kill(); // this child's PID only
            let _ = child.wait();
            panic!(
                "{what}: did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
    }
}

/// `wsloop SUB ARGS`, with `input` on stdin then EOF (no stdin at all for
/// `None`); panics if it has not exited `within`.
pub fn run_wsloop(sub: &str, args: &[&str], input: Option<&str>, within: Duration) -> BinRun {
    let mut child = wsloop_command(sub, args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("spawn wsloop {sub}: {e}"));
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    finish_run(&mut child, within, &format!("wsloop {sub}"), out, err)
}

/// `wsloop client ARGS` used interactively: writes `lines` to its stdin,
/// waits until as many lines came back on stdout (10 s each), then ends
/// stdin like ^D and waits up to `exit_within` for the exit. Panics, with
/// both outputs, if the lines do not come back or it does not exit (then
/// it is killed: this child's PID only). (Not `printf … | wsloop client`:
/// the client sends its close as soon as stdin ends, and a peer may answer
/// a close at once, dropping echoes it has not sent yet, as RFC 6455
/// §5.5.1 allows.)
pub fn client_session(args: &[&str], lines: &[&str], exit_within: Duration) -> BinRun {
    let mut child = wsloop_command("client", args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn wsloop client");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let err = read_all(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let out = thread::spawn(move || {
        let mut all = String::new();
        for line in io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(());
        }
        all
    });
    for l in lines {
        stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    for i in 0..lines.len() {
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill(); // this child's PID only
            let _ = child.wait();
            panic!(
                "wsloop client {args:?}: only {i} of {} lines came back; stdout:\n{}\nstderr:\n{}",
                lines.len(),
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
    }
    // The echoes are in and the client is idle: now end stdin.
    thread::sleep(Duration::from_millis(100));
    drop(stdin);
    finish_run(
        &mut child,
        exit_within,
        &format!("wsloop client {args:?} (after stdin ended)"),
        out,
        err,
    )
}
