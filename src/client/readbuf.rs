//! The read buffers a thread's clients borrow: a client holds one only
//! while undecoded input is in it.

use std::cell::RefCell;

/// Read buffers kept for the clients of a thread: one is in use at a time
/// when each client's input is decoded after it is read; a few more cover
/// clients whose input waits.
const POOLED_READ_BUFS: usize = 4;

thread_local! {
    static READ_BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer of `size` bytes (zeroed once, when first made).
pub(super) fn take_read_buf(size: usize) -> Vec<u8> {
    let mut buf = READ_BUFS.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    buf.resize(size, 0);
    buf
}

/// Takes `buf` back into the pool. Inlined: it is most often given the
/// empty `Vec` a client holds between reads, and then it is one compare.
#[inline]
pub(super) fn give_read_buf(buf: Vec<u8>) {
    if buf.capacity() != 0 {
        pool_read_buf(buf);
    }
}

fn pool_read_buf(buf: Vec<u8>) {
    READ_BUFS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_READ_BUFS {
            p.push(buf);
        }
    });
}
