//! The publish queue: jobs from the loop to the publisher thread, bounded
//! in jobs and in bytes. Messages in it or being sent are counted until
//! Redis has acknowledged them (or they were handed back), so a shutdown
//! can wait until they are flushed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::jobs::Job;
use super::poster::lock;

/// Messages not yet acknowledged by Redis.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    pub jobs: usize,
    pub bytes: usize,
}

/// What is queued or in flight, shared by the loop (adds) and the
/// publisher (subtracts once a message is settled).
#[derive(Default)]
pub(crate) struct Gauge {
    load: Mutex<Load>,
    settled: Condvar,
    /// A flush gave up waiting: the publisher stops retrying.
    abandoned: AtomicBool,
    /// Connections to Redis made again after it was lost (both threads).
    reconnects: AtomicU64,
}

impl Gauge {
    /// A connection to Redis came back after it was lost.
    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times a connection to Redis came back.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// A message left the publisher's hands: acknowledged by Redis, or
    /// handed back to the loop.
    pub(crate) fn done(&self, weight: usize) {
        let mut l = lock(&self.load);
        l.jobs = l.jobs.saturating_sub(1);
        l.bytes = l.bytes.saturating_sub(weight);
        if l.jobs == 0 {
            self.settled.notify_all();
        }
    }

    pub(crate) fn load(&self) -> Load {
        *lock(&self.load)
    }

    /// A flush has given up on what is left.
    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Waits until nothing is queued or in flight, or `deadline` (then
    /// the publisher is told to give up); returns what is left.
    pub(crate) fn wait_settled(&self, deadline: Instant) -> Load {
        let mut l = lock(&self.load);
        while l.jobs > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            l = self
                .settled
                .wait_timeout(l, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if l.jobs > 0 {
            self.abandoned.store(true, Ordering::Release);
        }
        *l
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Past the byte limit (queued bytes, the limit).
    Bytes(usize, usize),
    /// Past the job limit.
    Jobs(usize),
    /// The publisher thread is gone.
    Gone,
}

/// The loop's end of the publish queue.
pub(crate) struct Outbox {
    tx: SyncSender<Job>,
    gauge: Arc<Gauge>,
    max_jobs: usize,
    max_bytes: usize,
}

impl Outbox {
    /// A queue of at most `max_jobs` jobs and `max_bytes` bytes of
    /// messages, the publisher's end, and the gauge both share.
    pub(crate) fn new(max_jobs: usize, max_bytes: usize) -> (Outbox, Receiver<Job>, Arc<Gauge>) {
        let (tx, rx) = mpsc::sync_channel(max_jobs);
        let gauge = Arc::new(Gauge::default());
        (
            Outbox {
                tx,
                gauge: gauge.clone(),
                max_jobs,
                max_bytes,
            },
            rx,
            gauge,
        )
    }

    /// Queues `job`, never blocking. A message past the byte limit is
    /// refused (one message is always taken into an empty queue, so a
    /// limit below one message's size cannot wedge it).
    pub(crate) fn push(&self, job: Job) -> Result<(), Box<(Job, Full)>> {
        let weight = job.weight();
        let message = !matches!(job, Job::Fetch { .. });
        if message {
            let mut l = lock(&self.gauge.load);
            if l.jobs > 0 && l.bytes + weight > self.max_bytes {
                return Err(Box::new((job, Full::Bytes(l.bytes, self.max_bytes))));
            }
            l.jobs += 1;
            l.bytes += weight;
        }
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                let (job, why) = match e {
                    TrySendError::Full(j) => (j, Full::Jobs(self.max_jobs)),
                    TrySendError::Disconnected(j) => (j, Full::Gone),
                };
                if message {
                    let mut l = lock(&self.gauge.load);
                    l.jobs -= 1;
                    l.bytes -= weight;
                }
                Err(Box::new((job, why)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::jobs::room_message;

    fn msg(text: &str) -> Job {
        Job::Publish(room_message("r", "u1", None, text))
    }

    #[test]
    fn bytes_are_bounded_and_settled_messages_free_them() {
        let one = msg(&"x".repeat(100)).weight();
        let (out, rx, gauge) = Outbox::new(100, 3 * one);
        for _ in 0..3 {
            assert!(out.push(msg(&"x".repeat(100))).is_ok());
        }
        match out.push(msg(&"x".repeat(100))).map_err(|e| e.1) {
            Err(Full::Bytes(b, max)) => assert_eq!((b, max), (3 * one, 3 * one)),
            other => panic!("not refused for bytes: {other:?}"),
        }
        // Fetches are bounded by count only.
        let fetch = Job::Fetch {
            room: "r".into(),
            after: 0,
            hint: None,
        };
        assert!(out.push(fetch).is_ok());
        assert_eq!(
            gauge.load(),
            Load {
                jobs: 3,
                bytes: 3 * one
            }
        );
        // Taken by the publisher: still counted until settled.
        let job = rx.recv().unwrap();
        assert!(out.push(msg("y")).is_err());
        gauge.done(job.weight());
        assert!(out.push(msg(&"x".repeat(100))).is_ok());
        // A message bigger than the whole limit still goes into an empty
        // queue.
        let (out, _rx, _) = Outbox::new(10, 10);
        assert!(out.push(msg(&"x".repeat(100))).is_ok());
        assert!(matches!(
            out.push(msg("y")).map_err(|e| e.1),
            Err(Full::Bytes(..))
        ));
    }

    #[test]
    fn job_count_is_bounded_and_a_refusal_changes_nothing() {
        let (out, rx, gauge) = Outbox::new(2, 1 << 20);
        assert!(out.push(msg("a")).is_ok());
        assert!(out.push(msg("b")).is_ok());
        let before = gauge.load();
        assert!(matches!(
            out.push(msg("c")).map_err(|e| e.1),
            Err(Full::Jobs(2))
        ));
        assert_eq!(gauge.load(), before);
        drop(rx);
        assert!(matches!(
            out.push(msg("d")).map_err(|e| e.1),
            Err(Full::Gone)
        ));
        assert_eq!(gauge.load(), before);
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        assert_eq!(gauge.wait_settled(deadline), before);
    }
}
