//! An HTTP head, request or response, read across reads within a byte
//! limit and parsed with httparse: the one implementation behind
//! [`RequestReader`](super::RequestReader) and
//! [`ResponseReader`](super::ResponseReader). Also the header field type
//! and lookups both sides use.

use std::marker::PhantomData;

use crate::error::HandshakeError;

/// One header field. Values are bytes: HTTP allows non-UTF-8 (obs-text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name as sent.
    pub name: String,
    /// Field value, without surrounding white space.
    pub value: Vec<u8>,
}

pub(super) fn find_header<'h>(
    headers: &'h [Header],
    name: &str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    let name = name.to_owned();
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(&name))
        .map(|h| h.value.as_slice())
}

/// Comma-separated tokens of every header field called `name`, trimmed.
pub(super) fn header_tokens<'h>(
    headers: &'h [Header],
    name: &str,
) -> impl Iterator<Item = &'h str> + 'h {
    find_header(headers, name)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub(super) fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    header_tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// The headers httparse found, owned.
pub(super) fn copy_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// What [`RequestReader::feed`] and [`ResponseReader::feed`] found.
///
/// [`RequestReader::feed`]: super::RequestReader::feed
/// [`ResponseReader::feed`]: super::ResponseReader::feed
#[derive(Debug)]
pub enum Head<T> {
    /// More bytes are needed.
    Partial,
    /// The head, and the bytes received after it (the start of the
    /// WebSocket stream).
    Complete(T, Vec<u8>),
}

/// A head the shared reader can parse: a request or a response.
pub(super) trait ParseHead: Sized {
    /// Parses a head from the start of `buf`: `Ok(None)` if it is not
    /// complete yet, else the head and its length.
    fn parse(buf: &[u8], max_headers: usize) -> Result<Option<(Self, usize)>, HandshakeError>;
}

/// Runs httparse on `buf` with room for `max_headers` headers. `parse`
/// makes the request or response parser, runs it on `buf`, and copies out
/// what it found (with [`copy_headers`]); httparse's errors map here.
pub(super) fn parse_head<'b, T>(
    buf: &'b [u8],
    max_headers: usize,
    parse: impl FnOnce(
        &'b [u8],
        &mut [httparse::Header<'b>],
    ) -> Result<Option<(T, usize)>, httparse::Error>,
) -> Result<Option<(T, usize)>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    parse(buf, &mut headers).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders { max: max_headers },
        _ => HandshakeError::Malformed,
    })
}

/// Parses a complete head; bytes after it are an error here.
pub(super) fn parse_complete<T: ParseHead>(
    head: &[u8],
    max_headers: usize,
) -> Result<T, HandshakeError> {
    match T::parse(head, max_headers)? {
        Some((h, n)) if n == head.len() => Ok(h),
        _ => Err(HandshakeError::Malformed),
    }
}

/// Finds the end of an HTTP head (`\r\n\r\n`) in `buf`, looking only at
/// bytes from `from` on (minus three, for a terminator split across reads).
#[cfg(test)]
pub(super) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| start + p + 4)
}

/// True if the bytes from `from` on (minus two, for a split) hold an empty
/// line, `\n\n` or `\n\r\n`: the head may be complete. httparse accepts
/// bare-LF line ends, so `\r\n\r\n` alone is not the only terminator; the
/// head ends where httparse says, never at a place of our own.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf[start..]
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && buf.get(start + i + 2) == Some(&b'\n')))
}

/// Accumulates one head across reads, up to `max_bytes`.
#[derive(Debug)]
pub(super) struct HeadReader<T> {
    buf: Vec<u8>,
    head: PhantomData<fn() -> T>,
}

impl<T> Default for HeadReader<T> {
    fn default() -> Self {
        HeadReader {
            buf: Vec::new(),
            head: PhantomData,
        }
    }
}

impl<T: ParseHead> HeadReader<T> {
    /// Bytes held so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Adds `data` and parses the head once an empty line may have
    /// arrived; the bytes after it are handed back with it.
    ///
    /// A head that fits ends within the first `max_bytes`, so no more is
    /// kept: the buffer never grows past the limit (not even by doubling),
    /// and what a read brings beyond it goes straight to the stream after
    /// the head.
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        max_bytes: usize,
        max_headers: usize,
    ) -> Result<Head<T>, HandshakeError> {
        let buf = &mut self.buf;
        let from = buf.len();
        let (now, later) = data.split_at(data.len().min(max_bytes.saturating_sub(from)));
        if buf.capacity() - from < now.len() {
            let want = (from + now.len()).max(buf.capacity() * 2).min(max_bytes);
            buf.reserve_exact(want - from);
        }
        buf.extend_from_slice(now);
        let parsed = if may_end_head(buf, from) {
            T::parse(buf, max_headers)?
        } else {
            None
        };
        match parsed {
            Some((head, end)) => {
                let mut rest = buf.split_off(end);
                rest.extend_from_slice(later);
                *buf = Vec::new();
                Ok(Head::Complete(head, rest))
            }
            None if buf.len() >= max_bytes => Err(HandshakeError::TooLarge { max: max_bytes }),
            None => Ok(Head::Partial),
        }
    }
}
