//! Helpers shared by the fuzz targets.
#![allow(dead_code)]

pub mod conn;

/// Runs `f` on a thread of its own. wsloop keeps per-thread pools (write
/// buffers, zlib states): on a fresh thread every input starts from empty
/// pools, as a reproduction does, and their memory is freed when it ends.
/// Otherwise what one input leaves in a pool changes how the next one
/// runs, and libFuzzer, seeing more allocations than frees, runs the input
/// again under a full leak scan (a third of the time of the deflate
/// targets). A panic still aborts the process (libfuzzer-sys's hook).
pub fn isolated<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// xorshift64*: turns a seed from the input into chunk sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Splits `len` bytes into chunks: `max_chunk == 0` means one chunk, else
/// sizes in 0..=max_chunk (empty reads included).
pub fn chunk_sizes(len: usize, max_chunk: usize, seed: u64) -> Vec<usize> {
    if max_chunk == 0 {
        return vec![len];
    }
    let mut rng = Rng::new(seed);
    let mut left = len;
    let mut out = Vec::new();
    while left > 0 {
        let n = rng.below(max_chunk + 1).min(left);
        out.push(n);
        left -= n;
    }
    out.push(0);
    out
}

/// Where the head ends in `buf`: where httparse ends it (it accepts
/// bare-LF line endings, so this is not always after `\r\n\r\n`). The
/// readers must split the stream exactly there.
pub fn head_end(buf: &[u8], request: bool) -> Option<usize> {
    httparse_end(buf, request)
}

/// Strict standard base64 decoding (padding required), enough to check a
/// `Sec-WebSocket-Key`.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::new();
    for (i, q) in b.chunks(4).enumerate() {
        let last = i + 1 == b.len() / 4;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Where httparse itself ends the head in `head` (it accepts bare LF line
/// endings), if it parses. The readers must split the stream there too, or
/// the bytes in between are neither head nor stream.
pub fn httparse_end(head: &[u8], request: bool) -> Option<usize> {
    let mut hs = vec![httparse::EMPTY_HEADER; 64];
    let status = if request {
        httparse::Request::new(&mut hs).parse(head)
    } else {
        httparse::Response::new(&mut hs).parse(head)
    };
    match status {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// `FUZZ_ALLOW_LF_HEAD=1` skips the check above (a known issue, so that a
/// long run can look for others).
pub fn check_lf_head() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_ALLOW_LF_HEAD").is_none())
}
