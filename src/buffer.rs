//! The per-connection write queue.
//!
//! Small frames are appended to one owned buffer, so a burst of replies is
//! one `writev`. Large owned payloads and shared broadcast frames
//! (`Arc<[u8]>`, encoded once for every receiver) are queued by reference.
//! When a queue drains, its buffer goes back to a small per-thread pool, so
//! an idle connection owns no buffer and a busy one does not allocate per
//! message.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use crate::frame::{encode_header, FrameHeader, MAX_HEADER_LEN};
use crate::mask::apply_mask;

/// Payloads at least this large are queued as their own chunk when owned.
const BY_REF_MIN: usize = 16 * 1024;
/// Pooled buffers larger than this are freed instead.
const POOL_MAX_CAPACITY: usize = 64 * 1024;
/// Most buffers kept in a thread's pool.
const POOL_MAX_LEN: usize = 64;
/// Most chunks handed to one `writev`.
pub(crate) const MAX_IOV: usize = 64;

/// Large buffers (whole big messages) kept per thread, so a stream of
/// 1 MiB messages reuses the same memory instead of faulting in fresh pages
/// for each one. Bounded in bytes.
const BIG_POOL_MAX_CAPACITY: usize = 16 << 20;
const BIG_POOL_MAX_BYTES: usize = 32 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static BIG_POOL: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    /// Emptied chunk lists (of queues that held more than one chunk): a
    /// queue that drains releases its list (idle connections own nothing),
    /// and the next burst would otherwise allocate it again.
    #[allow(clippy::vec_box)]
    static LISTS: RefCell<Vec<List>> = const { RefCell::new(Vec::new()) };
}

/// Largest chunk list kept in the pool (a burst's long list is freed).
const LIST_POOL_MAX_CAPACITY: usize = 16;

fn pool_take() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

/// Returns a buffer no longer needed to the per-thread pools (or frees it).
/// A large one keeps its length: those bytes are initialized, so a message
/// read straight into it need not be zeroed first
/// ([`message_buffer_initialized`]).
#[inline]
pub(crate) fn pool_give(mut v: Vec<u8>) {
    let cap = v.capacity();
    if cap == 0 {
        return;
    }
    if cap > POOL_MAX_CAPACITY {
        big_pool_give(v);
        return;
    }
    v.clear();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX_LEN {
            p.push(v);
        }
    });
}

#[inline(never)]
fn big_pool_give(v: Vec<u8>) {
    let cap = v.capacity();
    if cap <= BIG_POOL_MAX_CAPACITY {
        BIG_POOL.with(|p| {
            let (list, bytes) = &mut *p.borrow_mut();
            if *bytes + cap <= BIG_POOL_MAX_BYTES {
                *bytes += cap;
                list.push(v);
            }
        });
    }
}

/// An empty buffer for a message expected to reach `expect` bytes: a pooled
/// large buffer if one fits, else a new one of at most `first` bytes (it
/// grows as data arrives: a declared size alone never allocates it).
pub(crate) fn message_buffer(expect: usize, first: usize) -> Vec<u8> {
    let mut v = message_buffer_initialized(expect, first);
    v.clear();
    v
}

/// [`message_buffer`], except that a pooled buffer keeps the length it had:
/// bytes of an earlier message, for a caller that tracks which bytes it
/// wrote and never hands out the others.
pub(crate) fn message_buffer_initialized(expect: usize, first: usize) -> Vec<u8> {
    if expect > POOL_MAX_CAPACITY {
        let found = BIG_POOL.with(|p| {
            let (list, bytes) = &mut *p.borrow_mut();
            // The smallest buffer that holds `expect`.
            let i = list
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= expect)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)?;
            let b = list.swap_remove(i);
            *bytes -= b.capacity();
            Some(b)
        });
        if let Some(b) = found {
            return b;
        }
    }
    Vec::with_capacity(expect.min(first))
}

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(a) => a,
        }
    }
}

/// A list of chunks, boxed: 8 bytes in every queue instead of 32, and most
/// queues never need one.
#[allow(clippy::box_collection)]
type List = Box<VecDeque<Chunk>>;

/// An empty chunk list, from the pool if it has one.
fn list_take() -> List {
    LISTS.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}

/// Returns an emptied chunk list to the pool (or frees it).
fn list_give(list: List) {
    debug_assert!(list.is_empty());
    if list.capacity() <= LIST_POOL_MAX_CAPACITY {
        LISTS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX_LEN {
                p.push(list);
            }
        });
    }
}

/// Bytes waiting to be written to one socket.
///
/// Most queues hold one chunk at a time (a reply, or a burst of small
/// frames in one buffer): that chunk is `last`, and no list is touched.
/// A list of the chunks before it exists only while there are some.
#[derive(Debug)]
pub struct WriteQueue {
    /// Chunks queued before `last`, oldest first; `None` or not empty.
    earlier: Option<List>,
    /// The newest chunk, where small frames are appended while it is an
    /// owned buffer with room. An owned buffer without storage when the
    /// queue is empty; not empty otherwise.
    last: Chunk,
    /// Bytes of the first chunk already written.
    head: usize,
    /// Unwritten bytes in all chunks.
    len: usize,
}

impl Default for WriteQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteQueue {
    /// An empty queue (allocates nothing).
    pub const fn new() -> Self {
        WriteQueue {
            earlier: None,
            last: Chunk::Owned(Vec::new()),
            head: 0,
            len: 0,
        }
    }

    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, oldest first (the first one's `head` bytes are written).
    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        let last = (self.len > 0).then_some(&self.last);
        self.earlier.iter().flat_map(|l| l.iter()).chain(last)
    }

    /// The owned buffer at the back with room for `need` more bytes.
    ///
    /// A buffer grows only up to the pooled size ([`POOL_MAX_CAPACITY`]);
    /// past that a new chunk starts, so buffers go back to the pool instead
    /// of growing by `realloc` (a copy and fresh pages) and being freed. A
    /// single write larger than that gets a buffer of its own from the large
    /// pool.
    fn tail(&mut self, need: usize) -> &mut Vec<u8> {
        let (fits, empty) = match &self.last {
            Chunk::Owned(v) => (
                v.len() + need <= v.capacity().max(POOL_MAX_CAPACITY),
                v.capacity() == 0,
            ),
            Chunk::Shared(_) => (false, false),
        };
        if !fits || empty {
            let v = if need > POOL_MAX_CAPACITY {
                message_buffer(need, need)
            } else {
                pool_take()
            };
            if empty {
                // The queue is empty: no chunk to keep.
                self.last = Chunk::Owned(v);
            } else {
                self.push_chunk(Chunk::Owned(v));
            }
        }
        let Chunk::Owned(v) = &mut self.last else {
            unreachable!("the last chunk is owned");
        };
        if v.capacity() - v.len() < need {
            // Double, at least 4 KiB, never past the pooled size unless one
            // write needs more.
            let cap = (v.capacity() * 2)
                .clamp(4096, POOL_MAX_CAPACITY)
                .max(v.len() + need);
            v.reserve_exact(cap - v.len());
        }
        v
    }

    /// Appends bytes (copied).
    pub fn push_slice(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.tail(data.len()).extend_from_slice(data);
        self.len += data.len();
    }

    /// Appends a frame: `header` then `payload`, masked with the header's
    /// key if it has one.
    pub fn push_frame(&mut self, header: &FrameHeader, payload: &[u8]) {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(header, &mut hdr);
        let tail = self.tail(n + payload.len());
        tail.extend_from_slice(&hdr[..n]);
        let start = tail.len();
        tail.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut tail[start..], key, 0);
        }
        self.len += n + payload.len();
    }

    /// Appends an unmasked frame whose payload is owned: a large payload is
    /// queued as is, without a copy.
    pub fn push_frame_owned(&mut self, header: &FrameHeader, mut payload: Vec<u8>) {
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = encode_header(header, &mut hdr);
        self.push_slice(&hdr[..n]);
        if payload.len() < BY_REF_MIN {
            self.push_slice(&payload);
            return;
        }
        self.len += payload.len();
        self.push_chunk(Chunk::Owned(payload));
    }

    /// Appends shared bytes (a frame encoded once for many receivers).
    pub fn push_shared(&mut self, data: Arc<[u8]>) {
        if data.is_empty() {
            return;
        }
        if data.len() < 512 {
            // Copying a small frame is cheaper than a chunk and an iovec.
            self.push_slice(&data);
            return;
        }
        self.len += data.len();
        self.push_chunk(Chunk::Shared(data));
    }

    /// Drops everything queued; the storage goes back to the pools (an
    /// idle connection owns none).
    pub fn clear(&mut self) {
        if let Some(mut list) = self.earlier.take() {
            for c in list.drain(..) {
                if let Chunk::Owned(v) = c {
                    pool_give(v);
                }
            }
            list_give(list);
        }
        match &mut self.last {
            Chunk::Owned(v) => pool_give(std::mem::take(v)),
            Chunk::Shared(_) => self.last = Chunk::Owned(Vec::new()),
        }
        self.head = 0;
        self.len = 0;
    }

    /// Makes `c` (not empty) the last chunk.
    fn push_chunk(&mut self, c: Chunk) {
        let old = std::mem::replace(&mut self.last, c);
        if old.bytes().is_empty() {
            // The queue was empty.
            if let Chunk::Owned(v) = old {
                pool_give(v);
            }
            return;
        }
        self.earlier.get_or_insert_with(list_take).push_back(old);
    }

    /// Marks `n` bytes as written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        if self.len == 0 {
            self.clear();
            return;
        }
        while n > 0 {
            let Some(list) = self.earlier.as_mut() else {
                // Within the last chunk.
                self.head += n;
                return;
            };
            let left = list.front().expect("not empty").bytes().len() - self.head;
            if n < left {
                self.head += n;
                return;
            }
            n -= left;
            self.head = 0;
            if let Some(Chunk::Owned(v)) = list.pop_front() {
                pool_give(v);
            }
            if list.is_empty() {
                if let Some(list) = self.earlier.take() {
                    list_give(list);
                }
            }
        }
    }

    /// Writes as much as `w` takes, with vectored writes, until the queue is
    /// empty or `w` would block. Returns the bytes written; `WouldBlock` is
    /// not an error here.
    pub fn write_to<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let res = if self.earlier.is_none() {
                w.write(&self.last.bytes()[self.head..])
            } else {
                let mut iov = [IoSlice::new(&[]); MAX_IOV];
                let mut cnt = 0;
                for (i, c) in self.chunks().take(MAX_IOV).enumerate() {
                    let b = c.bytes();
                    iov[i] = IoSlice::new(if i == 0 { &b[self.head..] } else { b });
                    cnt += 1;
                }
                w.write_vectored(&iov[..cnt])
            };
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.advance(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Moves everything queued to the end of `out` (for tests, fuzzing and
    /// in-memory transports).
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        for (i, c) in self.chunks().enumerate() {
            let b = c.bytes();
            out.extend_from_slice(if i == 0 { &b[self.head..] } else { b });
        }
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    /// A writer that takes at most `max` bytes per call and blocks every
    /// other call.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn mixed_chunks_come_out_in_order_under_partial_writes() {
        let mut q = WriteQueue::new();
        let mut expect = Vec::new();
        let big = vec![7u8; 40_000];
        let shared: Arc<[u8]> = vec![9u8; 2000].into();
        for i in 0..20u8 {
            q.push_slice(&[i; 3]);
            expect.extend_from_slice(&[i; 3]);
            if i % 5 == 0 {
                let h = FrameHeader::new(OpCode::Binary, big.len() as u64);
                q.push_frame_owned(&h, big.clone());
                crate::frame::write_frame(&h, &big, &mut expect);
                q.push_shared(shared.clone());
                expect.extend_from_slice(&shared);
            }
        }
        assert_eq!(q.len(), expect.len());
        for max in [1, 7, 1000, 1 << 20] {
            let mut q2 = WriteQueue::new();
            let mut e2 = Vec::new();
            q2.push_slice(&expect);
            e2.extend_from_slice(&expect);
            let mut w = Trickle {
                out: Vec::new(),
                max,
                calls: 0,
            };
            while !q2.is_empty() {
                q2.write_to(&mut w).unwrap();
            }
            assert_eq!(w.out, e2);
        }
        let mut w = Trickle {
            out: Vec::new(),
            max: 333,
            calls: 0,
        };
        while !q.is_empty() {
            q.write_to(&mut w).unwrap();
        }
        assert_eq!(w.out, expect);
        assert!(
            q.earlier.is_none() && matches!(&q.last, Chunk::Owned(v) if v.capacity() == 0),
            "drained queue keeps no storage"
        );
    }

    /// Pushes of every kind interleaved with partial writes (so the first
    /// chunk is half written when the last one moves into the list, or the
    /// list empties mid-write) come out as one byte stream, and a drained
    /// queue owns no storage, every time.
    #[test]
    fn interleaved_pushes_and_partial_writes_keep_the_bytes_in_order() {
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut q = WriteQueue::new();
        let mut expect = Vec::new();
        let mut w = Trickle {
            out: Vec::new(),
            max: 1,
            calls: 0,
        };
        let mut drained = 0;
        for round in 0..3000u32 {
            let byte = round as u8;
            match next(6) {
                0 => {
                    let data = vec![byte; 1 + next(300) as usize];
                    q.push_slice(&data);
                    expect.extend_from_slice(&data);
                }
                1 => {
                    let payload = vec![byte; [10, 20_000][next(2) as usize]];
                    let h = FrameHeader::new(OpCode::Binary, payload.len() as u64);
                    crate::frame::write_frame(&h, &payload, &mut expect);
                    q.push_frame_owned(&h, payload);
                }
                2 => {
                    let shared: Arc<[u8]> = vec![byte; [100, 2000][next(2) as usize]].into();
                    expect.extend_from_slice(&shared);
                    q.push_shared(shared);
                }
                _ => {
                    w.max = 1 + next(5000) as usize;
                    q.write_to(&mut w).unwrap();
                }
            }
            assert_eq!(q.len(), expect.len() - w.out.len());
            if q.is_empty() {
                drained += 1;
                assert!(q.earlier.is_none());
                assert!(matches!(&q.last, Chunk::Owned(v) if v.capacity() == 0));
            }
        }
        w.max = usize::MAX;
        while !q.is_empty() {
            q.write_to(&mut w).unwrap();
        }
        assert_eq!(w.out, expect);
        assert!(drained > 10, "the queue drained {drained} times");
    }

    /// A burst of 16 KiB frames fills buffers of at most the pooled size
    /// (so they are reused, not reallocated and freed); a single frame
    /// larger than that gets one buffer of its own. Bytes stay in order.
    #[test]
    fn owned_chunks_stay_within_the_pooled_size() {
        let mut q = WriteQueue::new();
        let mut expect = Vec::new();
        let payload = vec![5u8; 16 * 1024];
        let h = FrameHeader::new(OpCode::Binary, payload.len() as u64);
        for _ in 0..40 {
            q.push_frame(&h, &payload);
            crate::frame::write_frame(&h, &payload, &mut expect);
        }
        assert!(q.chunks().count() >= 40 * payload.len() / POOL_MAX_CAPACITY);
        for c in q.chunks() {
            let Chunk::Owned(v) = c else { panic!("owned") };
            assert!(v.capacity() <= POOL_MAX_CAPACITY, "{}", v.capacity());
        }
        let big = vec![6u8; 3 * POOL_MAX_CAPACITY];
        let hb = FrameHeader::new(OpCode::Binary, big.len() as u64);
        q.push_frame(&hb, &big);
        crate::frame::write_frame(&hb, &big, &mut expect);
        q.push_slice(b"tail");
        expect.extend_from_slice(b"tail");
        let chunks: Vec<&Chunk> = q.chunks().collect();
        let n = chunks.len();
        let Chunk::Owned(v) = chunks[n - 2] else {
            panic!("owned")
        };
        assert_eq!(
            v.len(),
            big.len() + 10,
            "the big frame (10-byte header) has a chunk of its own"
        );
        let Chunk::Owned(v) = chunks[n - 1] else {
            panic!("owned")
        };
        assert_eq!(v.as_slice(), b"tail");
        assert_eq!(q.len(), expect.len());
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out, expect);
    }

    #[test]
    fn masked_frame_is_masked() {
        let mut q = WriteQueue::new();
        let h = FrameHeader {
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            ..FrameHeader::new(OpCode::Text, 5)
        };
        q.push_frame(&h, b"Hello");
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
