//! Which room channels the subscriber should be subscribed to: the rooms
//! with members on this server. The loop writes the wanted set; the
//! subscriber thread reads it when told it changed, subscribes and
//! unsubscribes to match, and reports each subscription back (with the
//! token the loop gave it, so a stale report for a room that was left and
//! joined again meanwhile is recognised).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::poster::lock;

#[derive(Default)]
pub(crate) struct Subs {
    wanted: Mutex<HashMap<Arc<str>, u64>>,
    changed: AtomicBool,
}

impl Subs {
    /// The loop wants `room` (a new token each time it starts wanting it).
    pub(crate) fn want(&self, room: &Arc<str>, token: u64) {
        lock(&self.wanted).insert(room.clone(), token);
        self.changed.store(true, Ordering::Release);
    }

    /// The loop no longer wants `room`.
    pub(crate) fn drop_room(&self, room: &str) {
        lock(&self.wanted).remove(room);
        self.changed.store(true, Ordering::Release);
    }

    /// The wanted set if it changed since the last call (or `always`).
    pub(crate) fn take_changes(&self, always: bool) -> Option<HashMap<Arc<str>, u64>> {
        if !self.changed.swap(false, Ordering::AcqRel) && !always {
            return None;
        }
        Some(lock(&self.wanted).clone())
    }
}

/// Rooms to subscribe to, with their tokens.
pub(crate) type ToSubscribe = Vec<(Arc<str>, u64)>;

/// What the subscriber must do to go from `have` to `want`: rooms to
/// subscribe to (or whose token changed while subscribed: reported again),
/// and rooms to unsubscribe from.
pub(crate) fn diff(
    have: &HashMap<Arc<str>, u64>,
    want: &HashMap<Arc<str>, u64>,
) -> (ToSubscribe, Vec<Arc<str>>) {
    let mut sub: ToSubscribe = want
        .iter()
        .filter(|(r, t)| have.get(*r) != Some(t))
        .map(|(r, t)| (r.clone(), *t))
        .collect();
    let mut unsub: Vec<Arc<str>> = have
        .keys()
        .filter(|r| !want.contains_key(*r))
        .cloned()
        .collect();
    sub.sort();
    unsub.sort();
    (sub, unsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen_once_and_diffed() {
        let s = Subs::default();
        assert!(s.take_changes(false).is_none());
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        s.want(&a, 1);
        s.want(&b, 2);
        let want = s.take_changes(false).unwrap();
        assert!(s.take_changes(false).is_none());
        let have = HashMap::new();
        let (sub, unsub) = diff(&have, &want);
        assert_eq!(sub, [(a.clone(), 1), (b.clone(), 2)]);
        assert!(unsub.is_empty());
        // b left and came back (token 3) before the subscriber looked; a
        // left.
        s.drop_room("a");
        s.want(&b, 3);
        let (sub, unsub) = diff(&want, &s.take_changes(false).unwrap());
        assert_eq!((sub, unsub), (vec![(b, 3)], vec![a]));
    }
}
