//! Polling with a deadline: every wait ends, in a panic that names what
//! was awaited if it must.

use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Waits until `f` holds, polling every 5 ms; panics naming `what` after
/// `within`.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `counter` has not moved for 300 ms; returns its value.
/// Panics if it keeps moving for `within`.
pub fn wait_stall(counter: &AtomicUsize, within: Duration) -> usize {
    let mut last = usize::MAX;
    let mut stable_since = Instant::now();
    let start = Instant::now();
    loop {
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(300) {
            return now;
        }
        assert!(start.elapsed() < within, "never stalled");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `within` for `child` to exit; `None` if it has not (it is
/// left running: the caller decides).
pub fn wait_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if start.elapsed() >= within {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
