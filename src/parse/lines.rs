//! The lines of a byte stream, read with bounded memory ([`LineReader`]): a line longer than the limit is skipped
//! (and reported as such) without ever being held whole, and a last line without a newline is still returned.

use std::io::{self, Read};

pub enum Line<'a> {
    /// A line without its `\n`.
    Text(&'a [u8]),
    /// A line longer than the limit, skipped; its length in bytes.
    TooLong(u64),
}

pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    eof: bool,
    /// Bytes consumed so far (the offset of the next line).
    pub offset: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> LineReader<R> {
        let cap = (max_line_bytes + 1).max(64 * 1024);
        LineReader { inner, buf: vec![0; cap], start: 0, end: 0, max: max_line_bytes, eof: false, offset: 0 }
    }

    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        let mut skipped: Option<u64> = None;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let (s, e) = (self.start, self.start + i);
                self.start = e + 1;
                self.offset += (i + 1) as u64;
                return Ok(Some(match skipped {
                    Some(n) => Line::TooLong(n + i as u64),
                    None => Line::Text(&self.buf[s..e]),
                }));
            }
            let pending = self.end - self.start;
            if skipped.is_none() && pending > self.max {
                skipped = Some(0);
            }
            if let Some(n) = skipped.as_mut() {
                // Throw away what has been buffered of the overlong line; keep looking for its end.
                *n += pending as u64;
                self.offset += pending as u64;
                self.start = 0;
                self.end = 0;
            }
            if self.eof {
                if let Some(n) = skipped {
                    return Ok(Some(Line::TooLong(n)));
                }
                if self.start == self.end {
                    return Ok(None);
                }
                let (s, e) = (self.start, self.end);
                self.start = e;
                self.offset += (e - s) as u64;
                return Ok(Some(Line::Text(&self.buf[s..e])));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
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
        assert_eq!(r.offset, data.len() as u64);
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
}
