//! The one bounded line splitter: bytes of a stream cut into lines with bounded memory. A line longer than the
//! limit is skipped (and reported as such with its length) without ever being held whole, and a last line
//! without a newline can still be taken at the end of the stream.
//!
//! [`LineBuffer`] is the splitter itself, for readers that own their reads (the file tail, journalctl's pipe,
//! a kmsg dump followed like a file): read into [`LineBuffer::spare`], then take lines until there are none.
//! [`LineReader`] wraps it around any [`Read`] for reading a whole stream (`floodgate parse`).

use std::io::{self, Read};

/// Bytes asked of each read(2): large enough to catch up on a backlog quickly, small enough to stay bounded.
const CHUNK_BYTES: usize = 64 * 1024;

pub enum Line<'a> {
    /// A line without its `\n`.
    Text(&'a [u8]),
    /// A line longer than the limit, skipped; its length in bytes.
    TooLong(u64),
}

/// What is being done with the bytes after the last newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Kept until the newline arrives.
    No,
    /// Part of a line longer than the limit: dropped as it arrives; the count is of bytes dropped so far.
    Overlong(u64),
    /// The tail end of a line that was already being written when reading started mid-stream: it would reach
    /// the parser as a fragment (a truncated address is a wrong address), so it is dropped without a word.
    Fragment(u64),
}

/// A line found in the buffer, as positions (so finding one does not hold a borrow of the buffer).
#[derive(Clone, Copy)]
enum Cut {
    Text(usize, usize),
    TooLong(u64),
}

/// The bounded splitter. Holds at most `max_line_bytes` of an unfinished line (plus one read's worth of
/// following lines); the buffer starts at [`CHUNK_BYTES`] and grows, up to the limit, only for a long line.
pub struct LineBuffer {
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet cut.
    start: usize,
    end: usize,
    max: usize,
    skip: Skip,
    /// Stream offset just after the last line handed out (or skipped): where the next line starts.
    offset: u64,
}

impl LineBuffer {
    pub fn new(max_line_bytes: usize) -> LineBuffer {
        LineBuffer { buf: vec![0; CHUNK_BYTES], start: 0, end: 0, max: max_line_bytes, skip: Skip::No, offset: 0 }
    }

    /// Forgets everything buffered; the next byte read is at stream offset `offset` and starts a line.
    pub fn reset(&mut self, offset: u64) {
        self.start = 0;
        self.end = 0;
        self.skip = Skip::No;
        self.offset = offset;
    }

    /// Reading starts in the middle of a line (a file followed from its end): drop everything up to the first
    /// newline, silently.
    pub fn skip_fragment(&mut self) {
        self.skip = Skip::Fragment(0);
    }

    /// Stream offset just after the last line handed out or skipped: where a resumed reader should start.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Room to read the next bytes into; never empty. Take every line ([`LineBuffer::next_line`] until `None`)
    /// before asking for more room, so that only an unfinished line of at most the limit is carried over.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let limit = self.max.saturating_add(1).max(CHUNK_BYTES);
        if self.buf.len() - self.end < self.buf.len() / 2 && self.buf.len() < limit {
            // A long line is being collected: grow (never past the limit) rather than read in dribbles.
            self.buf.resize((self.buf.len() * 2).min(limit), 0);
        }
        debug_assert!(self.end < self.buf.len(), "lines were not taken before reading more");
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`LineBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.buf.len());
    }

    /// The next complete line, or `None` when the bytes read so far hold no more.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        let cut = self.cut()?;
        Some(self.line(cut))
    }

    /// The end of the stream: what follows the last newline is the last line (an overlong one is reported as
    /// such; a fragment is dropped). Call after [`LineBuffer::next_line`] returned `None`.
    pub fn finish(&mut self) -> Option<Line<'_>> {
        let (s, e) = (self.start, self.end);
        self.start = e;
        let pending = (e - s) as u64;
        match std::mem::replace(&mut self.skip, Skip::No) {
            Skip::No if s == e => None,
            Skip::No if e - s > self.max => {
                self.offset += pending;
                Some(Line::TooLong(pending))
            }
            Skip::No => {
                self.offset += pending;
                Some(Line::Text(&self.buf[s..e]))
            }
            Skip::Overlong(n) => {
                self.offset += n + pending;
                Some(Line::TooLong(n + pending))
            }
            Skip::Fragment(_) => None,
        }
    }

    fn line(&self, cut: Cut) -> Line<'_> {
        match cut {
            Cut::Text(s, e) => Line::Text(&self.buf[s..e]),
            Cut::TooLong(n) => Line::TooLong(n),
        }
    }

    fn cut(&mut self) -> Option<Cut> {
        loop {
            let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) else {
                self.drop_overlong();
                return None;
            };
            let (s, e) = (self.start, self.start + i);
            self.start = e + 1;
            let (cut, len) = match std::mem::replace(&mut self.skip, Skip::No) {
                Skip::No if i > self.max => (Cut::TooLong(i as u64), i as u64),
                Skip::No => (Cut::Text(s, e), i as u64),
                Skip::Overlong(n) => (Cut::TooLong(n + i as u64), n + i as u64),
                Skip::Fragment(n) => {
                    self.offset += n + i as u64 + 1;
                    continue;
                }
            };
            self.offset += len + 1;
            return Some(cut);
        }
    }

    /// No newline in what is buffered: if the unfinished line is already over the limit (or being skipped),
    /// let its bytes go, counting them.
    fn drop_overlong(&mut self) {
        let pending = (self.end - self.start) as u64;
        match &mut self.skip {
            Skip::No if self.end - self.start > self.max => self.skip = Skip::Overlong(pending),
            Skip::No => return,
            Skip::Overlong(n) | Skip::Fragment(n) => *n += pending,
        }
        self.start = 0;
        self.end = 0;
    }
}

/// The lines of a whole stream, read through a [`LineBuffer`].
pub struct LineReader<R> {
    inner: R,
    lines: LineBuffer,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> LineReader<R> {
        LineReader { inner, lines: LineBuffer::new(max_line_bytes), eof: false }
    }

    /// Bytes consumed so far (the offset of the next line).
    pub fn offset(&self) -> u64 {
        self.lines.offset()
    }

    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        loop {
            if let Some(cut) = self.lines.cut() {
                return Ok(Some(self.lines.line(cut)));
            }
            if self.eof {
                return Ok(self.lines.finish());
            }
            match self.inner.read(self.lines.spare()) {
                Ok(0) => self.eof = true,
                Ok(n) => self.lines.filled(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &[u8], max: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut r = LineReader::new(data, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(match l {
                Line::Text(t) => Ok(t.to_vec()),
                Line::TooLong(n) => Err(n),
            });
        }
        assert_eq!(r.offset(), data.len() as u64);
        out
    }

    #[test]
    fn lines_overlong_lines_and_a_truncated_last_line() {
        let mut data = b"one\ntwo\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1_000_000));
        data.extend(b"\nthree\nfour");
        let got = collect(&data, 1000);
        assert_eq!(
            got,
            vec![Ok(b"one".to_vec()), Ok(b"two".to_vec()), Err(1_000_000), Ok(b"three".to_vec()), Ok(b"four".to_vec())]
        );
    }

    #[test]
    fn an_overlong_last_line_without_newline() {
        let data = vec![b'y'; 300_000];
        assert_eq!(collect(&data, 1000), vec![Err(300_000)]);
        assert!(collect(b"", 1000).is_empty());
        assert_eq!(collect(b"\n\n", 1000), vec![Ok(vec![]), Ok(vec![])]);
    }

    #[test]
    fn the_limit_is_exact_even_when_the_whole_line_arrives_in_one_read() {
        let mut data = vec![b'a'; 300];
        data.push(b'\n');
        data.extend(vec![b'b'; 301]);
        data.extend(b"\nc");
        assert_eq!(collect(&data, 300), vec![Ok(vec![b'a'; 300]), Err(301), Ok(b"c".to_vec())]);
    }

    /// Feeds `data` in reads of `step` bytes, as the tailing sources do.
    fn feed(lines: &mut LineBuffer, data: &[u8], step: usize) -> Vec<(Result<Vec<u8>, u64>, u64)> {
        let mut out = Vec::new();
        for piece in data.chunks(step) {
            let spare = lines.spare();
            spare[..piece.len()].copy_from_slice(piece);
            lines.filled(piece.len());
            while let Some(l) = lines.next_line() {
                let l = match l {
                    Line::Text(t) => Ok(t.to_vec()),
                    Line::TooLong(n) => Err(n),
                };
                out.push((l, lines.offset()));
            }
        }
        out
    }

    #[test]
    fn lines_split_across_reads_with_their_offsets() {
        let mut lines = LineBuffer::new(16);
        lines.reset(100);
        let data = b"first\nsecond line\nthis one is far too long\nok\npartial";
        let got = feed(&mut lines, data, 3);
        assert_eq!(
            got,
            vec![
                (Ok(b"first".to_vec()), 106),
                (Ok(b"second line".to_vec()), 118),
                (Err(24), 143),
                (Ok(b"ok".to_vec()), 146),
            ]
        );
        // An overlong line in progress never moves the offset into its middle.
        assert_eq!(lines.offset(), 146);
        assert!(matches!(lines.finish(), Some(Line::Text(b"partial"))));
        assert_eq!(lines.offset(), 153);
        assert!(lines.finish().is_none());
    }

    #[test]
    fn a_fragment_is_dropped_silently_whatever_its_length() {
        let mut lines = LineBuffer::new(8);
        lines.skip_fragment();
        let mut data = vec![b'z'; 100];
        data.extend(b"\nnext\n");
        assert_eq!(feed(&mut lines, &data, 7), vec![(Ok(b"next".to_vec()), 106)]);
        let mut lines = LineBuffer::new(8);
        lines.skip_fragment();
        assert!(feed(&mut lines, b"no newline yet", 5).is_empty());
        assert!(lines.finish().is_none());
    }

    #[test]
    fn a_long_limit_grows_the_buffer_only_as_needed() {
        let mut lines = LineBuffer::new(1 << 20);
        let mut data = vec![b'q'; 200_000];
        data.push(b'\n');
        let got = feed(&mut lines, &data, 50_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.as_ref().map(Vec::len), Ok(200_000));
        assert!(lines.buf.len() <= (1 << 20) + 1);
    }
}
