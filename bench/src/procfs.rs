//! The server's CPU time and memory, read from /proc (`--server-pid`).

use std::time::{Duration, Instant};

use crate::options::{Mode, Options};

/// CPU time used so far by all threads of `pid`, in nanoseconds (the first
/// field of each /proc/PID/task/TID/schedstat).
fn read_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The server's CPU time (with `--server-pid`) at the two edges of what is
/// measured: in connect mode from before the first connect until all are
/// open, otherwise the start and the end of the measured window.
pub(crate) struct CpuMarks {
    pid: Option<u32>,
    connect: bool,
    warmup: Duration,
    duration: Duration,
    marks: [Option<(Instant, u64)>; 2],
}

impl CpuMarks {
    pub(crate) fn new(o: &Options, start: Instant) -> CpuMarks {
        let connect = o.mode == Mode::Connect;
        let first = match (o.server_pid, connect) {
            (Some(pid), true) => read_cpu_ns(pid).map(|ns| (start, ns)),
            _ => None,
        };
        CpuMarks {
            pid: o.server_pid,
            connect,
            warmup: o.warmup,
            duration: o.duration,
            marks: [first, None],
        }
    }

    /// Takes the sample that is due, if any, once the load has started
    /// (`go`); returns `nap`, shortened to wake for the next sample.
    pub(crate) fn sample(&mut self, go: Option<Instant>, nap: Duration) -> Duration {
        let (Some(pid), Some(go)) = (self.pid, go) else {
            return nap;
        };
        let now = Instant::now();
        if self.connect {
            // All connections are open once the load starts.
            if self.marks[1].is_none() {
                self.marks[1] = read_cpu_ns(pid).map(|ns| (now, ns));
            }
            return nap;
        }
        let due = [go + self.warmup, go + self.warmup + self.duration];
        let i = usize::from(self.marks[0].is_some());
        if i < 2 && self.marks[i].is_none() {
            if now >= due[i] {
                self.marks[i] = read_cpu_ns(pid).map(|ns| (now, ns));
            } else {
                return nap.min(due[i] - now);
            }
        }
        nap
    }

    /// The threads may end (the window over, every connection closed)
    /// before the sampling thread, if it was slow to wake, sampled the end
    /// of the window: sample now, a few milliseconds of closing late.
    pub(crate) fn threads_ended(&mut self) {
        if let (Some(pid), false, [Some(_), None]) = (self.pid, self.connect, self.marks) {
            self.marks[1] = read_cpu_ns(pid).map(|ns| (Instant::now(), ns));
        }
    }

    /// Server CPU in cores between the two samples, and the seconds to
    /// spread it over: the connect phase sampled (per handshake) or the
    /// measured window (per message).
    pub(crate) fn cores_and_secs(&self, measured_secs: f64) -> Option<(f64, f64)> {
        let [Some((t0, c0)), Some((t1, c1))] = self.marks else {
            return None;
        };
        if t1 <= t0 {
            return None;
        }
        let wall = t1.duration_since(t0);
        let cores = c1.saturating_sub(c0) as f64 / wall.as_nanos() as f64;
        let secs = if self.connect {
            wall.as_secs_f64()
        } else {
            measured_secs
        };
        Some((cores, secs))
    }
}

/// The resident set size of `pid`, in KiB.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    read_status_kib(pid, "VmRSS:")
}

/// The anonymous part of `pid`'s resident set (heap, stacks, other private
/// memory; not the pages of its binary and libraries), in KiB. Per idle
/// connection it is the steadier number: how much of the binary a server
/// has touched when the count starts varies from run to run.
pub fn read_rss_anon_kib(pid: u32) -> Option<u64> {
    read_status_kib(pid, "RssAnon:")
}

fn read_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}
