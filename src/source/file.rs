//! The file source: `tail -F` for one log file. It owns following a file by name across rename rotation,
//! copytruncate, deletion and late creation, resuming from a stored [`Position`] after a restart, and cutting
//! the bytes into complete lines with bounded memory (through [`LineBuffer`]: an overlong line is skipped, never
//! held whole).
//!
//! It blocks (it runs on a tokio blocking thread), sleeps on inotify events for the file's directory, and
//! looks at the file every [`Stop::POLL`] anyway, so a lost event never stalls it and a stop is seen promptly.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{Position, Sink, Stop};
use crate::parse::lines::{Line, LineBuffer};

/// A batch is sent when it holds this many lines...
const BATCH_LINES: usize = 1024;
/// ...or this many bytes, so a batch of long lines does not hold megabytes.
const BATCH_BYTES: usize = 1024 * 1024;
/// After a rename rotation, the writer often keeps writing to the old file until it is told to reopen (logrotate
/// `create` then `postrotate` HUP). While the new file is still empty the old one is followed for this long, so
/// the lines written in between are not lost.
const ROTATE_GRACE: Duration = Duration::from_secs(5);

/// Follows one log file by name and sends its complete lines to the pipeline.
pub struct FileSource {
    path: PathBuf,
    input: Arc<str>,
    max_line_bytes: usize,
    from_start: bool,
    resume: Option<Position>,
}

impl FileSource {
    /// `resume` is the position stored with the last batch before a restart; without it the file is read from
    /// its end (only new lines) unless `from_start`.
    pub fn new(path: PathBuf, max_line_bytes: usize, from_start: bool, resume: Option<Position>) -> FileSource {
        let input: Arc<str> = path.to_string_lossy().into();
        FileSource { path, input, max_line_bytes, from_start, resume }
    }

    /// Runs until stop.is_stopped() or the sink is closed. Blocking: called on a tokio blocking thread.
    pub fn run(self, sink: Sink, stop: Stop) {
        let start = match self.resume {
            Some(position) => Start::Resume(position),
            None if self.from_start => Start::Beginning,
            None => Start::End,
        };
        let mut tailer = Tailer::new(self, sink, stop);
        tailer.run(start);
    }
}

/// Where to begin in the file the next time it is opened.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Continue after a stored position, if it is still the same file.
    Resume(Position),
    /// Only what is written from now on.
    End,
    /// A new file: all of it.
    Beginning,
}

/// One open file being followed.
struct Tail {
    file: File,
    dev: u64,
    inode: u64,
    /// Bytes read from the file so far.
    offset: u64,
    /// The bytes read, cut into lines; its offset (just after the last newline consumed) is what a [`Position`]
    /// records.
    lines: LineBuffer,
    /// Lines consumed before the lines' offset, when known (not after starting from an offset).
    lines_done: Option<u64>,
    /// When the name was first seen to point to another, still empty file (see [`ROTATE_GRACE`]).
    replaced_since: Option<Instant>,
    /// An overlong line is reported once per file, not once per line: an attacker can write many.
    overlong_reported: bool,
}

impl Tail {
    fn position(&self) -> Position {
        Position { inode: self.inode, offset: self.lines.offset() }
    }
}

/// What the name shows after the open file has been read to its end.
enum Verdict {
    /// Still the same file.
    Same,
    /// The same file, shorter than what was read: truncated in place (copytruncate).
    Truncated,
    /// Keep reading the open file: the name is gone but the file was renamed, or the new file is still empty.
    Keep,
    /// The file was deleted and nothing replaced it.
    Gone,
    /// Another file now has the name.
    Replaced,
}

/// Why reading stopped early.
enum Fail {
    /// Stop was asked for or the pipeline is gone: leave the loop.
    Halt,
    Io(io::Error),
}

/// Lines read but not yet sent, and the way to send them.
struct Out {
    sink: Sink,
    input: Arc<str>,
    path: PathBuf,
    lines: Vec<Vec<u8>>,
    bytes: usize,
    first_line: Option<u64>,
}

impl Out {
    fn push(&mut self, tail: &Tail, line: Vec<u8>, line_no: Option<u64>) -> Result<(), Fail> {
        if self.lines.is_empty() {
            self.first_line = line_no;
        }
        self.bytes += line.len();
        self.lines.push(line);
        if self.lines.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES {
            self.flush(tail)?;
        }
        Ok(())
    }

    /// Sends the batch, recording the position after its last line (or after lines skipped since).
    fn flush(&mut self, tail: &Tail) -> Result<(), Fail> {
        if let Ok(meta) = tail.file.metadata() {
            self.sink.stats.lag_bytes.store(meta.len().saturating_sub(tail.offset), Ordering::Relaxed);
        }
        if self.lines.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        if self.sink.send_lines(&self.input, lines, self.first_line.take(), Some(tail.position())) {
            Ok(())
        } else {
            Err(Fail::Halt)
        }
    }

    /// A line longer than the limit: counted as read, not sent. The batch before it is sent first so that
    /// `first_line` keeps numbering the lines that follow correctly.
    fn overlong(&mut self, tail: &mut Tail, bytes: u64, max_line_bytes: usize) -> Result<(), Fail> {
        self.flush(tail)?;
        self.sink.stats.lines.fetch_add(1, Ordering::Relaxed);
        if !tail.overlong_reported {
            tail.overlong_reported = true;
            tracing::warn!(
                file = %self.path.display(),
                bytes,
                max_line_bytes,
                "skipped a line longer than max_line_bytes (further ones in this file are skipped silently)"
            );
        }
        Ok(())
    }
}

/// The running state of a [`FileSource`].
struct Tailer {
    path: PathBuf,
    /// The directory watched for the name's creation, rename and deletion.
    dir: PathBuf,
    name: OsString,
    max_line_bytes: usize,
    stop: Stop,
    out: Out,
    watcher: Option<RecommendedWatcher>,
    events: Option<mpsc::Receiver<notify::Result<notify::Event>>>,
    watching: bool,
    /// The problem last reported, so a failure that lasts is logged once, not every 200 ms.
    problem: Option<String>,
}

impl Tailer {
    fn new(source: FileSource, sink: Sink, stop: Stop) -> Tailer {
        let dir = match source.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = source.path.file_name().map(OsStr::to_os_string).unwrap_or_default();
        let (tx, rx) = mpsc::channel();
        let (watcher, events) = match notify::recommended_watcher(tx) {
            Ok(watcher) => (Some(watcher), Some(rx)),
            Err(e) => {
                tracing::warn!(
                    file = %source.path.display(),
                    error = %e,
                    "cannot use inotify (raise fs.inotify.max_user_instances?); polling every 200 ms instead"
                );
                (None, None)
            }
        };
        let out =
            Out { sink, input: source.input, path: source.path.clone(), lines: Vec::new(), bytes: 0, first_line: None };
        Tailer {
            path: source.path,
            dir,
            name,
            max_line_bytes: source.max_line_bytes,
            stop,
            out,
            watcher,
            events,
            watching: false,
            problem: None,
        }
    }

    fn run(&mut self, mut start: Start) {
        self.watch();
        if let Start::Resume(position) = start {
            if let Err(Fail::Halt) = self.catch_up_rotated(position) {
                return;
            }
        }
        let mut tail = None;
        loop {
            if self.stop.is_stopped() || self.out.sink.is_closed() {
                return;
            }
            tail = match self.step(tail, &mut start) {
                Ok(tail) => tail,
                Err(Fail::Halt) => return,
                // step() handles its own I/O errors; nothing else returns Io.
                Err(Fail::Io(_)) => None,
            };
            self.watch();
            self.wait();
        }
    }

    /// Opens the file if needed, reads all there is, and follows the name to a new file when it changed.
    fn step(&mut self, tail: Option<Tail>, start: &mut Start) -> Result<Option<Tail>, Fail> {
        let mut tail = match tail {
            Some(tail) => tail,
            None => match self.open(&self.path, *start) {
                Ok(tail) => {
                    if matches!(*start, Start::End) {
                        // The starting point is stored at once (an empty batch carries it): a crash before the
                        // first line is stored resumes here, instead of at the end of everything written since.
                        if !self.out.sink.send_lines(&self.out.input, Vec::new(), None, Some(tail.position())) {
                            return Err(Fail::Halt);
                        }
                    }
                    self.out.sink.stats.ready.store(true, Ordering::Relaxed);
                    // Whatever appears under the name after this one is a new file.
                    *start = Start::Beginning;
                    tail
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Created later, it is a new file: read it whole.
                    *start = Start::Beginning;
                    self.missing();
                    return Ok(None);
                }
                Err(e) => {
                    self.trouble("cannot open", &e);
                    return Ok(None);
                }
            },
        };
        loop {
            if let Err(e) = self.drain(&mut tail) {
                return self.read_failed(tail, e, start);
            }
            let verdict = match self.check(&mut tail) {
                Ok(verdict) => verdict,
                Err(e) => return self.read_failed(tail, Fail::Io(e), start),
            };
            match verdict {
                Verdict::Same => {
                    self.healthy();
                    return Ok(Some(tail));
                }
                Verdict::Keep => return Ok(Some(tail)),
                Verdict::Truncated => {
                    tracing::info!(file = %self.path.display(), "file truncated (copytruncate?); reading it from the start");
                    if let Err(e) = tail.file.seek(SeekFrom::Start(0)) {
                        return self.read_failed(tail, Fail::Io(e), start);
                    }
                    // What was after the partial line went into the copy: the partial alone is not a line.
                    tail.offset = 0;
                    tail.lines.reset(0);
                    tail.lines_done = Some(0);
                }
                Verdict::Gone => {
                    self.finish(&mut tail)?;
                    *start = Start::Beginning;
                    self.missing();
                    return Ok(None);
                }
                Verdict::Replaced => {
                    // Lines written to the old file up to now must not be lost: read it to its very end.
                    if let Err(e) = self.drain(&mut tail) {
                        return self.read_failed(tail, e, start);
                    }
                    self.finish(&mut tail)?;
                    tracing::info!(file = %self.path.display(), "file rotated; following the new one");
                    *start = Start::Beginning;
                    match self.open(&self.path, Start::Beginning) {
                        Ok(new) => tail = new,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.missing();
                            return Ok(None);
                        }
                        Err(e) => {
                            self.trouble("cannot open", &e);
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// After a read error the file is reopened later and resumed after its last complete line.
    fn read_failed(&mut self, tail: Tail, fail: Fail, start: &mut Start) -> Result<Option<Tail>, Fail> {
        match fail {
            Fail::Halt => Err(Fail::Halt),
            Fail::Io(e) => {
                self.trouble("cannot read", &e);
                *start = Start::Resume(tail.position());
                Ok(None)
            }
        }
    }

    fn open(&self, path: &Path, start: Start) -> io::Result<Tail> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        let (offset, lines_done, mid_line) = match start {
            Start::Beginning => (0, Some(0), false),
            Start::End => {
                let mut last = [0u8; 1];
                let mid_line = len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n';
                (len, None, mid_line)
            }
            Start::Resume(p) if p.inode == meta.ino() && p.offset <= len => {
                (p.offset, if p.offset == 0 { Some(0) } else { None }, false)
            }
            // Another file (rotated while we were down), or this one truncated: all of it is new.
            Start::Resume(_) => (0, Some(0), false),
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        let mut lines = LineBuffer::new(self.max_line_bytes);
        lines.reset(offset);
        if mid_line {
            lines.skip_fragment();
        }
        Ok(Tail {
            file,
            dev: meta.dev(),
            inode: meta.ino(),
            offset,
            lines,
            lines_done,
            replaced_since: None,
            overlong_reported: false,
        })
    }

    /// On a resume where the name now holds another file: the file we were reading was rotated while floodgate
    /// was down. If it is still there under the usual rename name (`<path>.1`), read what was written to it
    /// after the stored position before going on to the new file.
    fn catch_up_rotated(&mut self, position: Position) -> Result<(), Fail> {
        if let Ok(meta) = fs::metadata(&self.path) {
            if meta.ino() == position.inode {
                return Ok(());
            }
        }
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        let rotated = PathBuf::from(rotated);
        let mut tail = match self.open(&rotated, Start::Resume(position)) {
            Ok(tail) => tail,
            Err(_) => return Ok(()),
        };
        if tail.inode != position.inode || tail.offset != position.offset {
            // Not our file, or it shrank: there is nothing we can trust in it.
            return Ok(());
        }
        tracing::info!(file = %rotated.display(), offset = position.offset, "reading the rest of the file rotated while stopped");
        match self.drain(&mut tail) {
            Ok(()) => self.finish(&mut tail),
            Err(Fail::Halt) => Err(Fail::Halt),
            Err(Fail::Io(e)) => {
                tracing::warn!(file = %rotated.display(), error = %e, "cannot read the rotated file; some lines are lost");
                Ok(())
            }
        }
    }

    /// Reads the open file to its current end, sending every complete line.
    fn drain(&mut self, tail: &mut Tail) -> Result<(), Fail> {
        let max = self.max_line_bytes;
        loop {
            if self.stop.is_stopped() {
                // Unsent lines are not lost: positions only advance with sent batches, a restart re-reads them.
                return Err(Fail::Halt);
            }
            let n = match tail.file.read(tail.lines.spare()) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.out.flush(tail)?;
                    return Err(Fail::Io(e));
                }
            };
            tail.offset += n as u64;
            tail.lines.filled(n);
            loop {
                let line = match tail.lines.next_line() {
                    None => break,
                    Some(Line::Text(text)) => Ok(text.to_vec()),
                    Some(Line::TooLong(bytes)) => Err(bytes),
                };
                let line_no = tail.lines_done.map(|done| done + 1);
                tail.lines_done = line_no;
                match line {
                    Ok(line) => self.out.push(tail, line, line_no)?,
                    Err(bytes) => self.out.overlong(tail, bytes, max)?,
                }
            }
        }
        self.out.flush(tail)
    }

    /// The file is done with (rotated or deleted): its last line, even without a newline, is complete.
    fn finish(&mut self, tail: &mut Tail) -> Result<(), Fail> {
        let line = match tail.lines.finish() {
            None => None,
            Some(Line::Text(text)) => Some(Ok(text.to_vec())),
            Some(Line::TooLong(bytes)) => Some(Err(bytes)),
        };
        match line {
            None => {}
            Some(Ok(line)) => {
                let line_no = tail.lines_done.map(|done| done + 1);
                tail.lines_done = line_no;
                self.out.push(tail, line, line_no)?;
            }
            Some(Err(bytes)) => self.out.overlong(tail, bytes, self.max_line_bytes)?,
        }
        self.out.flush(tail)
    }

    /// Compares the open file with what the name points to now.
    fn check(&mut self, tail: &mut Tail) -> io::Result<Verdict> {
        let open = tail.file.metadata()?;
        if open.len() < tail.offset {
            return Ok(Verdict::Truncated);
        }
        match fs::metadata(&self.path) {
            Ok(named) if named.dev() == tail.dev && named.ino() == tail.inode => {
                tail.replaced_since = None;
                Ok(Verdict::Same)
            }
            Ok(named) => {
                let since = *tail.replaced_since.get_or_insert_with(Instant::now);
                if named.len() == 0 && open.nlink() > 0 && since.elapsed() < ROTATE_GRACE {
                    Ok(Verdict::Keep)
                } else {
                    Ok(Verdict::Replaced)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if open.nlink() > 0 {
                    // Renamed (still linked): the usual moment in a rotation, not worth a log line. Its writer
                    // may still be adding lines until the new file appears.
                    self.out.sink.stats.waiting.store(true, Ordering::Relaxed);
                    Ok(Verdict::Keep)
                } else {
                    // Deleted: nothing more will be written that anyone can read, and holding it would pin its
                    // disk space.
                    Ok(Verdict::Gone)
                }
            }
            Err(e) => {
                self.trouble("cannot look up", &e);
                Ok(Verdict::Keep)
            }
        }
    }

    /// Watches the directory (creation and rename of the name are events on it). Retried while it fails:
    /// the directory itself may not exist yet.
    fn watch(&mut self) {
        if self.watching {
            return;
        }
        if let Some(watcher) = self.watcher.as_mut() {
            self.watching = watcher.watch(&self.dir, RecursiveMode::NonRecursive).is_ok();
        }
    }

    /// Sleeps until an event concerns the file, or `Stop::POLL` has passed.
    fn wait(&mut self) {
        let deadline = Instant::now() + Stop::POLL;
        let Some(events) = self.events.as_ref() else {
            std::thread::sleep(Stop::POLL);
            return;
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match events.recv_timeout(left) {
                Ok(event) => {
                    if concerns(&self.name, &event) {
                        // One look at the file answers every event queued so far.
                        while events.try_recv().is_ok() {}
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The watcher's thread is gone: polling alone still follows the file.
                    self.events = None;
                    self.watcher = None;
                    std::thread::sleep(left);
                    return;
                }
            }
        }
    }

    fn missing(&mut self) {
        self.out.sink.stats.waiting.store(true, Ordering::Relaxed);
        if self.problem.as_deref() != Some("missing") {
            self.problem = Some("missing".to_string());
            tracing::info!(file = %self.path.display(), "file does not exist; waiting for it to be created");
        }
        // A deleted directory takes its watch with it; watch it again once it is back.
        if self.watching && !self.dir.is_dir() {
            if let Some(watcher) = self.watcher.as_mut() {
                let _ = watcher.unwatch(&self.dir);
            }
            self.watching = false;
        }
    }

    fn trouble(&mut self, what: &str, err: &io::Error) {
        self.out.sink.stats.waiting.store(true, Ordering::Relaxed);
        let problem = format!("{what}: {err}");
        if self.problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!(file = %self.path.display(), error = %err, "{what} the log file; retrying every 200 ms");
            self.problem = Some(problem);
        }
    }

    fn healthy(&mut self) {
        self.out.sink.stats.waiting.store(false, Ordering::Relaxed);
        if self.problem.take().is_some() {
            tracing::info!(file = %self.path.display(), "reading the file again");
        }
    }
}

/// Whether an event may mean new bytes, a new file or a rotation for our name. Opens and closes (including
/// our own) are not.
fn concerns(name: &OsStr, event: &notify::Result<notify::Event>) -> bool {
    match event {
        Err(_) => true,
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => false,
        Ok(event) => {
            event.need_rescan() || event.paths.is_empty() || event.paths.iter().any(|p| p.file_name() == Some(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Feed, SourceStats};
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::thread::JoinHandle;
    use tokio::sync::mpsc as tokio_mpsc;

    const PATIENCE: Duration = Duration::from_secs(2);

    /// A line as received: text, its line number, and the position of the batch it came in.
    #[derive(Debug, Clone)]
    struct Got {
        text: String,
        line_no: Option<u64>,
        position: Option<Position>,
    }

    struct Harness {
        rx: tokio_mpsc::Receiver<Feed>,
        stop: Stop,
        stats: Arc<SourceStats>,
        thread: Option<JoinHandle<()>>,
    }

    fn start(path: &Path, max_line_bytes: usize, from_start: bool, resume: Option<Position>) -> Harness {
        let (tx, rx) = tokio_mpsc::channel(64);
        let stats = Arc::new(SourceStats::default());
        let sink = Sink::new(tx, stats.clone());
        let stop = Stop::new();
        let source = FileSource::new(path.to_path_buf(), max_line_bytes, from_start, resume);
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || source.run(sink, thread_stop));
        Harness { rx, stop, stats, thread: Some(thread) }
    }

    impl Harness {
        /// Receives until `n` lines have arrived or `within` has passed. `blocking_recv` has no timeout, so this
        /// polls `try_recv`.
        fn receive(&mut self, n: usize, within: Duration) -> Vec<Got> {
            let deadline = Instant::now() + within;
            let mut got = Vec::new();
            while got.len() < n && Instant::now() < deadline {
                match self.rx.try_recv() {
                    Ok(Feed::Lines { lines, first_line, position, .. }) => {
                        for (i, line) in lines.into_iter().enumerate() {
                            got.push(Got {
                                text: String::from_utf8_lossy(&line).into_owned(),
                                line_no: first_line.map(|f| f + i as u64),
                                position,
                            });
                        }
                    }
                    Ok(Feed::Events { .. }) => panic!("a file source sends lines only"),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            got
        }

        fn expect(&mut self, want: &[&str]) -> Vec<Got> {
            let got = self.receive(want.len(), PATIENCE);
            let texts: Vec<&str> = got.iter().map(|g| g.text.as_str()).collect();
            assert_eq!(texts, want);
            got
        }

        /// Asserts that nothing more arrives (no duplicate, no fragment).
        fn expect_quiet(&mut self, within: Duration) {
            let got = self.receive(1, within);
            assert!(got.is_empty(), "unexpected lines: {got:?}");
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.stop.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A fresh directory and the path of `mail.log` in it, not created yet; the file is gone with the directory.
    fn log_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mail.log");
        (dir, path)
    }

    /// [`log_dir`] with `mail.log` created holding `contents`.
    fn mail_log(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let (dir, path) = log_dir();
        fs::write(&path, contents).expect("create");
        (dir, path)
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().create(true).append(true).open(path).expect("open for append");
        file.write_all(bytes).expect("append");
    }

    fn inode(path: &Path) -> u64 {
        fs::metadata(path).expect("stat").ino()
    }

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn appended_lines_arrive_in_order_exactly_once_with_line_numbers() {
        let (_dir, path) = mail_log(b"");
        let mut h = start(&path, 1000, true, None);
        append(&path, b"one\ntwo\n");
        let got = h.expect(&["one", "two"]);
        append(&path, b"three\n");
        append(&path, b"four\nfive\n");
        let more = h.expect(&["three", "four", "five"]);
        h.expect_quiet(Duration::from_millis(300));
        let numbers: Vec<Option<u64>> = got.iter().chain(more.iter()).map(|g| g.line_no).collect();
        assert_eq!(numbers, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
        assert_eq!(more.last().and_then(|g| g.position), Some(Position { inode: inode(&path), offset: 24 }));
        assert_eq!(h.stats.lines.load(Ordering::Relaxed), 5);
        assert_eq!(h.stats.lag_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn start_at_end_skips_existing_lines_and_from_start_reads_them() {
        // The last existing line is still being written: its rest must not arrive as a line of its own.
        let (_dir, path) = mail_log(b"old1\nold2\nhalf-wri");
        let mut h = start(&path, 1000, false, None);
        // When the source has opened the file is unknown: probe until a line comes through.
        let mut got = Vec::new();
        for i in 0..40 {
            append(&path, if i == 0 { b"tten\n".as_slice() } else { b"probe\n".as_slice() });
            got = h.receive(1, Duration::from_millis(50));
            if !got.is_empty() {
                break;
            }
        }
        got.extend(h.receive(100, Duration::from_millis(200)));
        assert!(!got.is_empty(), "no line arrived");
        assert!(got.iter().all(|g| g.text == "probe"), "got {got:?}");
        drop(h);

        let mut h = start(&path, 1000, true, None);
        let got = h.receive(2, PATIENCE);
        assert_eq!(got[0].text, "old1");
        assert_eq!(got[1].text, "old2");
    }

    #[test]
    fn a_partial_line_is_held_until_its_newline() {
        let (_dir, path) = mail_log(b"");
        let mut h = start(&path, 1000, true, None);
        append(&path, b"hel");
        h.expect_quiet(Duration::from_millis(400));
        append(&path, b"lo wor");
        h.expect_quiet(Duration::from_millis(300));
        append(&path, b"ld\nnext");
        let got = h.expect(&["hello world"]);
        assert_eq!(got[0].position.map(|p| p.offset), Some(12));
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn an_overlong_line_is_counted_not_sent() {
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 300_000));
        data.extend(b"\nafter\n");
        let (_dir, path) = mail_log(&data);
        let mut h = start(&path, 100, true, None);
        let got = h.expect(&["short", "after"]);
        assert_eq!(got[1].line_no, Some(3));
        assert_eq!(got[1].position.map(|p| p.offset), Some(data.len() as u64));
        h.expect_quiet(Duration::from_millis(300));
        assert_eq!(h.stats.lines.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn rename_rotation_loses_no_line_and_repeats_none() {
        let (dir, path) = log_dir();
        let rotated = dir.path().join("mail.log.1");
        let mut writer = OpenOptions::new().create(true).append(true).open(&path).expect("open");
        writer.write_all(b"a1\na2\n").expect("write");
        let mut h = start(&path, 1000, true, None);
        h.expect(&["a1", "a2"]);

        fs::rename(&path, &rotated).expect("rename");
        // The writer has not reopened yet: these go to the renamed file, the last one without its newline.
        writer.write_all(b"b1\nb2\nb3-unterminated").expect("write");
        std::thread::sleep(Duration::from_millis(300));
        writer.write_all(b" still b3").expect("write");
        assert!(h.stats.waiting.load(Ordering::Relaxed), "the name is missing between rename and create");
        let mut writer = OpenOptions::new().create(true).append(true).open(&path).expect("open new");
        writer.write_all(b"c1\nc2\n").expect("write");

        let got = h.expect(&["b1", "b2", "b3-unterminated still b3", "c1", "c2"]);
        h.expect_quiet(Duration::from_millis(400));
        assert_eq!(got[3].line_no, Some(1), "the new file is numbered from 1");
        assert_eq!(got[4].position, Some(Position { inode: inode(&path), offset: 6 }));
        wait_for("waiting to be cleared", || !h.stats.waiting.load(Ordering::Relaxed));
    }

    #[test]
    fn after_a_rename_the_old_file_is_followed_while_the_new_one_is_empty() {
        let (dir, path) = log_dir();
        let mut old_writer = OpenOptions::new().create(true).append(true).open(&path).expect("open");
        let mut h = start(&path, 1000, true, None);
        old_writer.write_all(b"before\n").expect("write");
        h.expect(&["before"]);
        // logrotate: rename, create the new file empty, and only later tell the writer to reopen.
        fs::rename(&path, dir.path().join("mail.log.1")).expect("rename");
        fs::write(&path, b"").expect("create new");
        std::thread::sleep(Duration::from_millis(300));
        old_writer.write_all(b"late\n").expect("write");
        std::thread::sleep(Duration::from_millis(300));
        append(&path, b"new1\n");
        let got = h.expect(&["late", "new1"]);
        assert_eq!(got[1].position, Some(Position { inode: inode(&path), offset: 5 }));
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn copytruncate_restarts_at_zero() {
        let (_dir, path) = mail_log(b"x1 first\nx2 second\n");
        let mut h = start(&path, 1000, true, None);
        h.expect(&["x1 first", "x2 second"]);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(0).expect("truncate");
        append(&path, b"y1\n");
        let got = h.expect(&["y1"]);
        assert_eq!(got[0].position, Some(Position { inode: inode(&path), offset: 3 }));
        assert_eq!(got[0].line_no, Some(1));
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn a_missing_file_is_waited_for_then_read_from_its_start() {
        let (_dir, path) = log_dir();
        // Not from_start: a file created after we started is new, all of it is read anyway.
        let mut h = start(&path, 1000, false, None);
        wait_for("waiting to be set", || h.stats.waiting.load(Ordering::Relaxed));
        h.expect_quiet(Duration::from_millis(300));
        fs::write(&path, b"m1\nm2\n").expect("create");
        h.expect(&["m1", "m2"]);
        wait_for("waiting to be cleared", || !h.stats.waiting.load(Ordering::Relaxed));
    }

    #[test]
    fn a_deleted_then_recreated_file_is_read_from_its_start() {
        let (_dir, path) = mail_log(b"d1\n");
        let mut h = start(&path, 1000, true, None);
        h.expect(&["d1"]);
        fs::remove_file(&path).expect("remove");
        wait_for("waiting to be set", || h.stats.waiting.load(Ordering::Relaxed));
        fs::write(&path, b"e1\ne2\n").expect("recreate");
        h.expect(&["e1", "e2"]);
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn resume_continues_exactly_after_the_position() {
        let (_dir, path) = mail_log(b"r1\nr2\nr3\n");
        let resume = Position { inode: inode(&path), offset: 3 };
        let mut h = start(&path, 1000, false, Some(resume));
        let got = h.expect(&["r2", "r3"]);
        assert_eq!(got[1].position, Some(Position { inode: resume.inode, offset: 9 }));
        assert_eq!(got[0].line_no, None, "the line number is unknown after resuming from an offset");
        append(&path, b"r4\n");
        h.expect(&["r4"]);
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn resume_with_another_inode_reads_the_new_file_from_its_start() {
        let (_dir, path) = mail_log(b"n1\nn2\n");
        let resume = Position { inode: inode(&path).wrapping_add(12345), offset: 3 };
        let mut h = start(&path, 1000, false, Some(resume));
        let got = h.expect(&["n1", "n2"]);
        assert_eq!(got[0].line_no, Some(1));
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn resume_after_a_rotation_while_down_reads_the_rest_of_the_rotated_file_first() {
        let (dir, path) = mail_log(b"o1\no2\no3");
        let rotated = dir.path().join("mail.log.1");
        let resume = Position { inode: inode(&path), offset: 3 };
        fs::rename(&path, &rotated).expect("rename");
        fs::write(&path, b"n1\n").expect("create new");
        let mut h = start(&path, 1000, false, Some(resume));
        let got = h.expect(&["o2", "o3", "n1"]);
        assert_eq!(got[1].position, Some(Position { inode: resume.inode, offset: 8 }));
        assert_eq!(got[2].position, Some(Position { inode: inode(&path), offset: 3 }));
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn a_resume_past_the_end_of_the_same_file_reads_it_from_the_start() {
        let (_dir, path) = mail_log(b"t1\n");
        // Truncated while we were down.
        let resume = Position { inode: inode(&path), offset: 500 };
        let mut h = start(&path, 1000, false, Some(resume));
        h.expect(&["t1"]);
        h.expect_quiet(Duration::from_millis(300));
    }

    #[test]
    fn stop_is_noticed_promptly_and_a_closed_sink_ends_the_run() {
        let (_dir, path) = log_dir();
        let mut h = start(&path, 1000, false, None);
        std::thread::sleep(Duration::from_millis(100));
        let asked = Instant::now();
        h.stop.stop();
        if let Some(thread) = h.thread.take() {
            thread.join().expect("source thread");
        }
        assert!(asked.elapsed() < Duration::from_millis(600), "took {:?}", asked.elapsed());

        fs::write(&path, b"z\n").expect("create");
        let (tx, rx) = tokio_mpsc::channel(64);
        drop(rx);
        let source = FileSource::new(path.clone(), 1000, true, None);
        let thread = std::thread::spawn(move || source.run(Sink::new(tx, Arc::default()), Stop::new()));
        let asked = Instant::now();
        thread.join().expect("source thread");
        assert!(asked.elapsed() < Duration::from_millis(600));
    }
}
