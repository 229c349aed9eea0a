//! The kernel log source: records from /dev/kmsg ("Possible SYN flooding", "nf_conntrack: table full"), sent to
//! the parser as the device's own `PRI,SEQ,USEC,FLAGS;TEXT` lines, with the record's sequence number as the
//! resume position.
//!
//! The device hands out one record per read() and keeps its own reader position; records the kernel overwrote
//! before we read them come back as EPIPE, which is counted as lost and read on from, never fatal. The position
//! is only meaningful within one boot (the sequence restarts at 0), so it carries a hash of the boot id.
//!
//! When the configured path is not a character device (tests, a saved dump) it is read as a growing text file of
//! records, one per line, polled for appended records. Gaps in the sequence numbers of such a file are how it
//! was written, not records lost, so only the device counts loss.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Position, Sink, Stop};
use crate::os::poll::wait_readable;
use crate::parse::lines::{Line, LineBuffer};

/// Where the kernel publishes the id of the current boot (a UUID, new at every boot).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
const INPUT: &str = "kmsg";
/// Records per `Feed`: enough that a burst of kernel lines costs few channel sends.
const BATCH_MAX: usize = 256;
/// The kernel refuses (EINVAL) a read() whose buffer cannot hold the whole record; records are at most
/// CONSOLE_EXT_LOG_MAX (8 KiB) with their dictionary, so twice that is always enough.
const RECORD_BYTES: usize = 16 << 10;
/// Longest line kept in file mode; longer ones are skipped (a kmsg record's text is at most 1 KiB).
const MAX_LINE_BYTES: usize = 16 << 10;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Reads kernel records from /dev/kmsg (or, for tests, a text file of records).
#[derive(Debug)]
pub struct KmsgSource {
    path: PathBuf,
    resume: Option<Position>,
    boot_id_path: PathBuf,
}

impl KmsgSource {
    /// `resume` is the position stored with the last batch the pipeline recorded. Without one, only records
    /// written from now on are read (the ring buffer holds the whole boot's history, already acted upon or not
    /// worth replaying); with one from the same boot, reading resumes after its sequence number; with one from
    /// another boot, the whole buffer is read, since all of it is new.
    pub fn new(path: PathBuf, resume: Option<Position>) -> Self {
        KmsgSource { path, resume, boot_id_path: PathBuf::from(BOOT_ID_PATH) }
    }

    /// Reads the boot id from elsewhere (tests simulate a reboot with it).
    pub fn with_boot_id_path(mut self, path: PathBuf) -> Self {
        self.boot_id_path = path;
        self
    }

    /// Reads until `stop` is set or the pipeline goes away. Blocking: run it on a blocking thread. A device or
    /// file that cannot be opened or read marks the input as waiting and is retried with a back-off.
    pub fn run(self, sink: Sink, stop: Stop) {
        let boot = match read_boot_hash(&self.boot_id_path) {
            Ok(h) => h,
            Err(e) => {
                // Without it a restart cannot tell a reboot from a restart of floodgate; 0 keeps resuming
                // within what looks like one boot, the common case.
                tracing::warn!(file = %self.boot_id_path.display(), error = %e,
                    "kmsg: cannot read the boot id; a resume position cannot be checked against reboots");
                0
            }
        };
        let cursor = Cursor::new(boot, self.resume);
        let mut reader = Reader {
            input: Arc::from(INPUT),
            sink,
            stop,
            cursor,
            epipe: false,
            lines: Vec::new(),
            backoff: BACKOFF_FIRST,
        };
        loop {
            if reader.stopped() {
                return;
            }
            let outcome = match std::fs::metadata(&self.path) {
                Ok(m) if m.file_type().is_char_device() => reader.read_device(&self.path),
                Ok(_) => reader.read_file(&self.path),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    let wait = reader.backoff;
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        tracing::warn!(file = %self.path.display(), error = %e, retry_in = ?wait,
                            "kmsg: cannot read the kernel log (reading /dev/kmsg needs CAP_SYSLOG when \
                             kernel.dmesg_restrict=1); retrying");
                    } else {
                        tracing::warn!(file = %self.path.display(), error = %e, retry_in = ?wait,
                            "kmsg: cannot read the kernel log; retrying");
                    }
                    reader.sink.stats.waiting.store(true, Ordering::Relaxed);
                    if !reader.stop.sleep(wait) {
                        return;
                    }
                    reader.backoff = (wait * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// How far reading has come, across reopenings of the device.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Hash of this boot's id: the `inode` of every position sent.
    boot: u64,
    /// Records up to this sequence number are done (sent, or covered by the resume position).
    last: Option<u64>,
    /// Nothing to resume from: start at the end of the buffer instead of its oldest record.
    from_end: bool,
}

impl Cursor {
    fn new(boot: u64, resume: Option<Position>) -> Cursor {
        match resume {
            None => Cursor { boot, last: None, from_end: true },
            Some(p) if p.inode == boot => Cursor { boot, last: Some(p.offset), from_end: false },
            // Another boot: its sequence numbers mean nothing now, and every record in the buffer is new.
            Some(_) => Cursor { boot, last: None, from_end: false },
        }
    }

    fn position(&self) -> Option<Position> {
        self.last.map(|seq| Position { inode: self.boot, offset: seq })
    }
}

struct Reader {
    input: Arc<str>,
    sink: Sink,
    stop: Stop,
    cursor: Cursor,
    /// The device said EPIPE: the next record read comes after a gap.
    epipe: bool,
    lines: Vec<Vec<u8>>,
    backoff: Duration,
}

impl Reader {
    fn stopped(&self) -> bool {
        self.stop.is_stopped() || self.sink.is_closed()
    }

    /// The input opened: it is no longer waiting, and the next failure starts the back-off afresh.
    fn opened(&mut self) {
        self.sink.stats.ready.store(true, Ordering::Relaxed);
        self.sink.stats.waiting.store(false, Ordering::Relaxed);
        self.backoff = BACKOFF_FIRST;
    }

    /// Ok when stopped (or the pipeline is gone), Err when the device failed and should be reopened.
    fn read_device(&mut self, path: &Path) -> io::Result<()> {
        // Non-blocking, so a quiet kernel never holds the thread past a poll() timeout and stop is noticed.
        let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
        if self.cursor.from_end {
            file.seek(SeekFrom::End(0))?;
        }
        // A freshly opened device starts at the oldest record; `Cursor::last` skips what was already sent.
        self.opened();
        let mut record = vec![0u8; RECORD_BYTES];
        loop {
            if self.stopped() {
                return Ok(());
            }
            loop {
                match file.read(&mut record) {
                    // The device never returns 0; treat it as "nothing now" rather than spin.
                    Ok(0) => break,
                    Ok(n) => {
                        // The first line is the record; ` KEY=VALUE` dictionary lines follow it.
                        let end = memchr::memchr(b'\n', &record[..n]).unwrap_or(n);
                        self.record(&record[..end], true);
                        if self.lines.len() >= BATCH_MAX && !self.flush() {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Records were overwritten before we read them; the device moved on to the oldest one left.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => self.epipe = true,
                    Err(e) => {
                        self.flush();
                        return Err(e);
                    }
                }
            }
            if !self.flush() {
                return Ok(());
            }
            wait_readable(&file, Stop::POLL)?;
        }
    }

    /// File mode: a text file of records, one per line, followed like `tail -f`.
    fn read_file(&mut self, path: &Path) -> io::Result<()> {
        let mut file = File::open(path)?;
        let mut offset = if self.cursor.from_end { file.seek(SeekFrom::End(0))? } else { 0 };
        self.opened();
        let mut records = LineBuffer::new(MAX_LINE_BYTES);
        loop {
            if self.stopped() {
                return Ok(());
            }
            match file.read(records.spare()) {
                Ok(0) => {
                    if !self.flush() {
                        return Ok(());
                    }
                    // Truncated (rewritten from scratch): read it again from the top.
                    if file.metadata()?.len() < offset {
                        offset = file.seek(SeekFrom::Start(0))?;
                        records.reset(0);
                    }
                    std::thread::sleep(Stop::POLL);
                }
                Ok(n) => {
                    offset += n as u64;
                    records.filled(n);
                    while let Some(line) = records.next_line() {
                        match line {
                            // Dictionary lines (` KEY=VALUE`) belong to the record before them.
                            Line::Text(line) if !line.starts_with(b" ") && !line.is_empty() => self.record(line, false),
                            Line::Text(_) => {}
                            Line::TooLong(bytes) => {
                                tracing::debug!(file = %path.display(), bytes, "kmsg: overlong record skipped")
                            }
                        }
                    }
                    if self.lines.len() >= BATCH_MAX && !self.flush() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.flush();
                    return Err(e);
                }
            }
        }
    }

    /// Takes one record's first line: skipped when already done, counted as lost after a gap on the device.
    fn record(&mut self, line: &[u8], device: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(seq) = record_seq(line) {
            let gap = match self.cursor.last {
                Some(last) if seq <= last => return,
                Some(last) => seq - last - 1,
                None => 0,
            };
            if device {
                // Device sequence numbers are contiguous, so any jump is records overwritten unread (also after
                // a restart from a stored position). EPIPE without a known last record still lost at least one.
                let lost = if std::mem::take(&mut self.epipe) { gap.max(1) } else { gap };
                if lost > 0 {
                    tracing::debug!(lost, seq, "kmsg: records overwritten before they were read");
                    self.sink.lost(lost);
                }
            }
            self.cursor.last = Some(seq);
            // From now on a reopened device resumes after this record instead of at the end.
            self.cursor.from_end = false;
        }
        self.lines.push(line.to_vec());
    }

    /// Sends the pending lines with the position after them. False when the pipeline is gone.
    fn flush(&mut self) -> bool {
        if self.lines.is_empty() {
            return true;
        }
        let lines = std::mem::take(&mut self.lines);
        self.sink.send_lines(&self.input, lines, None, self.cursor.position())
    }
}

/// The sequence number of a `PRI,SEQ,USEC,FLAGS[,...];TEXT` record.
fn record_seq(line: &[u8]) -> Option<u64> {
    let semi = memchr::memchr(b';', &line[..line.len().min(64)])?;
    let mut fields = line[..semi].split(|&b| b == b',');
    let _priority = fields.next()?;
    std::str::from_utf8(fields.next()?).ok()?.parse().ok()
}

/// A stable hash of the boot id: FNV-1a, so the value stored in the database means the same after an upgrade
/// (std's hasher makes no such promise).
pub fn boot_hash(boot_id: &str) -> u64 {
    boot_id.trim().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn read_boot_hash(path: &Path) -> io::Result<u64> {
    let id = std::fs::read_to_string(path)?;
    if id.trim().is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty boot id"));
    }
    Ok(boot_hash(&id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Feed, SourceStats};
    use std::io::Write;
    use std::time::Instant;
    use tokio::sync::mpsc;

    struct Running {
        rx: mpsc::Receiver<Feed>,
        stats: Arc<SourceStats>,
        stop: Stop,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(source: KmsgSource) -> Running {
            let (tx, rx) = mpsc::channel(64);
            let stats = Arc::new(SourceStats::default());
            let sink = Sink::new(tx, stats.clone());
            let stop = Stop::new();
            let s = stop.clone();
            let thread = std::thread::spawn(move || source.run(sink, s));
            Running { rx, stats, stop, thread: Some(thread) }
        }

        /// Lines (and the last position seen) received until `want` lines arrived or `timeout` passed.
        fn lines(&mut self, want: usize, timeout: Duration) -> (Vec<String>, Option<Position>) {
            let until = Instant::now() + timeout;
            let (mut out, mut pos) = (Vec::new(), None);
            while out.len() < want && Instant::now() < until {
                match self.rx.try_recv() {
                    Ok(Feed::Lines { input, lines, position, .. }) => {
                        assert_eq!(&*input, "kmsg");
                        out.extend(lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()));
                        pos = position.or(pos);
                    }
                    Ok(Feed::Events { .. }) => panic!("kmsg sends lines only"),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            (out, pos)
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.stop();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn boot_file(dir: &Path, id: &str) -> PathBuf {
        let p = dir.join("boot_id");
        std::fs::write(&p, format!("{id}\n")).unwrap();
        p
    }

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new().append(true).create(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    const SYN: &str = "TCP: request_sock_TCP: Possible SYN flooding on port 198.51.100.1:25. Sending cookies.";

    #[test]
    fn appended_records_arrive_and_old_ones_do_not_without_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        append(&path, "6,1,100,-;old record\n");
        let source = KmsgSource::new(path.clone(), None).with_boot_id_path(boot_file(dir.path(), "boot-a"));
        let mut run = Running::start(source);
        // Let the source open the file and seek to its end before records are appended.
        std::thread::sleep(Duration::from_millis(300));
        append(&path, &format!("6,341,154110937,-;{SYN}\n4,342,154110999,-;nf_conntrack: table full\n"));
        let (lines, pos) = run.lines(2, Duration::from_secs(3));
        assert_eq!(
            lines,
            vec![format!("6,341,154110937,-;{SYN}"), "4,342,154110999,-;nf_conntrack: table full".into()]
        );
        assert_eq!(pos, Some(Position { inode: boot_hash("boot-a"), offset: 342 }));
        assert_eq!(run.stats.lines.load(Ordering::Relaxed), 2);
        assert!(!run.stats.waiting.load(Ordering::Relaxed));
    }

    #[test]
    fn continuation_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        append(&path, &format!("6,10,5,-;{SYN}\n SUBSYSTEM=net\n DEVICE=+net:eth0\n6,11,6,-;second\n"));
        // A resume position from another boot reads the whole buffer.
        let resume = Position { inode: boot_hash("boot-old"), offset: 10 };
        let source = KmsgSource::new(path, Some(resume)).with_boot_id_path(boot_file(dir.path(), "boot-a"));
        let mut run = Running::start(source);
        let (lines, _) = run.lines(3, Duration::from_millis(800));
        assert_eq!(lines, vec![format!("6,10,5,-;{SYN}"), "6,11,6,-;second".to_string()]);
    }

    #[test]
    fn resume_in_the_same_boot_skips_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        append(&path, "6,1,1,-;one\n6,2,2,-;two\n6,3,3,-;three\n6,4,4,-;four\n");
        let resume = Position { inode: boot_hash("boot-a"), offset: 2 };
        let source = KmsgSource::new(path, Some(resume)).with_boot_id_path(boot_file(dir.path(), "boot-a"));
        let mut run = Running::start(source);
        let (lines, pos) = run.lines(3, Duration::from_millis(800));
        assert_eq!(lines, vec!["6,3,3,-;three", "6,4,4,-;four"]);
        assert_eq!(pos, Some(Position { inode: boot_hash("boot-a"), offset: 4 }));
    }

    #[test]
    fn resume_from_another_boot_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        append(&path, "6,1,1,-;one\n6,2,2,-;two\n");
        let resume = Position { inode: boot_hash("boot-a"), offset: 5 };
        let source = KmsgSource::new(path, Some(resume)).with_boot_id_path(boot_file(dir.path(), "boot-b"));
        let mut run = Running::start(source);
        let (lines, pos) = run.lines(2, Duration::from_secs(3));
        assert_eq!(lines, vec!["6,1,1,-;one", "6,2,2,-;two"]);
        assert_eq!(pos, Some(Position { inode: boot_hash("boot-b"), offset: 2 }));
    }

    #[test]
    fn a_sequence_gap_in_a_file_is_not_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        append(&path, "6,1,1,-;one\n6,50,2,-;fifty\n");
        let resume = Position { inode: 0, offset: 0 };
        let source = KmsgSource::new(path, Some(resume)).with_boot_id_path(boot_file(dir.path(), "boot-a"));
        let mut run = Running::start(source);
        let (lines, _) = run.lines(2, Duration::from_secs(3));
        assert_eq!(lines.len(), 2);
        assert_eq!(run.stats.lost.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_missing_path_waits_and_stops_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let source = KmsgSource::new(dir.path().join("absent"), None).with_boot_id_path(boot_file(dir.path(), "b"));
        let mut run = Running::start(source);
        std::thread::sleep(Duration::from_millis(100));
        assert!(run.stats.waiting.load(Ordering::Relaxed));
        let t0 = Instant::now();
        run.stop.stop();
        if let Some(t) = run.thread.take() {
            t.join().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn record_sequence_numbers_and_boot_hash() {
        assert_eq!(record_seq(b"6,341,154110937,-;TCP: x"), Some(341));
        assert_eq!(record_seq(b"6,341,154110937,-,caller=T1;x"), Some(341));
        assert_eq!(record_seq(b" SUBSYSTEM=net"), None);
        assert_eq!(record_seq(b"6,x,1,-;x"), None);
        assert_eq!(record_seq(b""), None);
        // Fixed values: a stored position must survive upgrades.
        assert_eq!(boot_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(boot_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(boot_hash("id\n"), boot_hash("id"));
    }

    /// The newest sequence number in the real buffer, read without consuming anything anyone else sees
    /// (every opener of /dev/kmsg has its own position). None when the device cannot be read here.
    fn newest_real_seq(path: &Path) -> Option<Option<u64>> {
        let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).ok()?;
        let mut buf = vec![0u8; RECORD_BYTES];
        let mut newest = None;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => newest = record_seq(&buf[..n]).max(newest),
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return None,
            }
        }
        Some(newest)
    }

    #[test]
    fn real_kmsg_without_resume_delivers_nothing_old() {
        let path = Path::new("/dev/kmsg");
        let Some(newest) = newest_real_seq(path) else {
            eprintln!("skipped: /dev/kmsg cannot be read here");
            return;
        };
        let mut run = Running::start(KmsgSource::new(path.to_path_buf(), None));
        let (lines, _) = run.lines(usize::MAX, Duration::from_millis(300));
        // The kernel may log something new meanwhile; nothing from before the start may come through.
        for line in &lines {
            let seq = record_seq(line.as_bytes());
            assert!(seq.is_some() && seq > newest, "old record delivered: {line} (newest before start: {newest:?})");
        }
        assert!(!run.stats.waiting.load(Ordering::Relaxed));
        assert_eq!(run.stats.lost.load(Ordering::Relaxed), 0);
    }
}
