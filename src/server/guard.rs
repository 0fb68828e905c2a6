//! Handler calls that may panic: a panic costs the connection it was
//! about, not the loop and every other connection on it.

use std::any::Any;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

use log::error;

use crate::close::CloseCode;

use super::entry::Phase;
use super::Core;

/// Close code and reason for a connection whose handler panicked.
pub(super) const PANIC_CLOSE: (CloseCode, &str) = (CloseCode::INTERNAL, "internal error");

/// Runs the handler call `f`; on a panic logs it, naming the callback and
/// whom it was about, and returns `None`.
///
/// `AssertUnwindSafe`: the loop's own state is only changed through `Ctx`
/// methods, each of which completes before handler code runs again, so a
/// panic cannot leave it half-updated. The handler's state may be: the
/// [`Handler`](super::Handler) docs say so.
pub(super) fn guarded<R>(what: &str, who: impl Display, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            error!(
                "{who}: handler panicked in {what}: {}",
                panic_message(&*payload)
            );
            None
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string payload)")
}

impl Core {
    /// After a panic in a callback about `key`: no more of its input reaches
    /// the handler, and it is closed with 1011 after what is queued.
    pub(super) fn fail_by_panic(&mut self, key: usize) {
        let now = self.now;
        self.stats.handler_panics += 1;
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        e.handler_failed = true;
        if let Phase::Open { conn } = &mut e.phase {
            let (code, reason) = PANIC_CLOSE;
            conn.close(code, reason, now);
        }
        self.mark_dirty(key);
        self.schedule(key);
    }
}
