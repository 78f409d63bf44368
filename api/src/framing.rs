//! Reading and writing [`Frame`]s on a stream: the one place the size limit is
//! enforced, for every socket of both processes.
//!
//! ```text
//!  bytes ──► FrameReader::read_frame ── line ≤ MAX_LINE ──► Frame::decode ──► Read::Frame
//!                │                                        └ bad ──► Read::Invalid{id, error}
//!                └ line > MAX_LINE: the rest of it is discarded as it arrives
//!                  (never buffered) ──► Read::Invalid{TooLarge}
//! ```
//!
//! A read that times out (`WouldBlock`/`TimedOut` from a socket with a read
//! timeout) is returned as the error it is and loses nothing: the part of a line
//! already read is kept for the next call. Memory per connection is bounded by
//! [`MAX_LINE`] whatever the peer sends; time is bounded by the socket's timeouts.

use std::io::{self, BufRead, BufReader, Write};

use crate::{Error, Frame, MAX_LINE};

/// What [`FrameReader::read_frame`] found.
#[derive(Debug)]
pub enum Read {
    /// A frame.
    Frame(Box<Frame>),
    /// A line that is not a frame (or is too long); `id` is its id when one
    /// could be read, so the error can be answered.
    Invalid {
        /// The line's id, or 0.
        id: u64,
        /// Why.
        error: Error,
    },
    /// The peer closed the stream (a partial last line is dropped).
    Eof,
}

/// Reads newline-delimited frames from `R`, at most [`MAX_LINE`] bytes each.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    /// Bytes of an over-long line seen so far (it is being discarded).
    skipping: Option<usize>,
}

impl<R: io::Read> FrameReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        FrameReader { inner: BufReader::with_capacity(64 * 1024, inner), line: Vec::new(), skipping: None }
    }

    /// The stream.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The next frame, invalid line, or end of stream. Blank lines are skipped.
    pub fn read_frame(&mut self) -> io::Result<Read> {
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(Read::Eof);
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            match &mut self.skipping {
                Some(n) => *n += chunk.len(),
                None if self.line.len() + chunk.len() > MAX_LINE => {
                    self.skipping = Some(self.line.len() + chunk.len());
                    self.line = Vec::new();
                }
                None => self.line.extend_from_slice(chunk),
            }
            let used = chunk.len() + usize::from(newline.is_some());
            self.inner.consume(used);
            if newline.is_none() {
                continue;
            }
            if let Some(n) = self.skipping.take() {
                return Ok(Read::Invalid { id: 0, error: Error::TooLarge(n) });
            }
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            return Ok(match Frame::decode(&text) {
                Ok(f) => Read::Frame(Box::new(f)),
                Err(error) => Read::Invalid { id: Frame::id_of(&text), error },
            });
        }
    }
}

/// Writes one frame; a frame whose encoding exceeds [`MAX_LINE`] is not sent
/// (the peer would refuse it) and is an `InvalidInput` error naming its size.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    let line = frame.encode();
    if line.len() > MAX_LINE + 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a frame of {} bytes exceeds the limit of {MAX_LINE}", line.len()),
        ));
    }
    w.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, Response};

    #[test]
    fn frames_invalid_lines_and_over_long_lines_without_buffering_them() {
        let mut input = Vec::new();
        input.extend_from_slice(Frame::request(1, Request::Ping).encode().as_bytes());
        input.extend_from_slice(b"\n\nnot json\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        input.push(b'\n');
        input.extend_from_slice(
            Frame::response(2, Response::Error { code: crate::ErrorCode::Invalid, message: "m".into() })
                .encode()
                .as_bytes(),
        );
        input.extend_from_slice(b"{\"v\":1,\"id\":3"); // cut short
        let mut r = FrameReader::new(&input[..]);
        assert!(matches!(r.read_frame().unwrap(), Read::Frame(f) if f.id == 1));
        assert!(matches!(r.read_frame().unwrap(), Read::Invalid { error: Error::Malformed(_), .. }));
        match r.read_frame().unwrap() {
            Read::Invalid { error: Error::TooLarge(n), .. } => assert_eq!(n, MAX_LINE * 3),
            other => panic!("{other:?}"),
        }
        assert!(r.line.capacity() <= MAX_LINE + 64 * 1024, "the long line was not kept");
        assert!(matches!(r.read_frame().unwrap(), Read::Frame(f) if f.id == 2));
        assert!(matches!(r.read_frame().unwrap(), Read::Eof));
    }

    /// A reader that returns `WouldBlock` between pieces, as a socket with a read
    /// timeout does.
    struct Trickle(Vec<Vec<u8>>);
    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0);
            if piece.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    #[test]
    fn a_timeout_mid_line_loses_nothing() {
        let line = Frame::request(9, Request::Ping).encode().into_bytes();
        let (a, b) = line.split_at(7);
        let mut r = FrameReader::new(Trickle(vec![a.to_vec(), vec![], b.to_vec()]));
        assert_eq!(r.read_frame().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(matches!(r.read_frame().unwrap(), Read::Frame(f) if f.id == 9));
    }

    #[test]
    fn over_long_frames_are_not_written() {
        let big = Frame::response(
            1,
            Response::Error { code: crate::ErrorCode::Invalid, message: "y".repeat(MAX_LINE) },
        );
        let mut out = Vec::new();
        assert_eq!(write_frame(&mut out, &big).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty());
    }
}
