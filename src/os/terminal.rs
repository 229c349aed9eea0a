//! The terminal for `floodgate top`: keys read one at a time without echo, and the screen given back as it was,
//! whatever ends the program (q, Ctrl-C, SIGTERM, an error).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT, SIGTERM or SIGHUP: the loop ends and the terminal is restored (the default action would leave
/// it without echo, in the alternate screen).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Keys without Enter and without echo, the alternate screen, the cursor hidden; all undone on drop.
pub struct Screen {
    saved: Option<libc::termios>,
}

impl Screen {
    pub fn open() -> io::Result<Screen> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: sigaction with a handler that only stores an atomic (async-signal-safe); the struct is zeroed
        // then filled, and lives across the calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        // SAFETY: tcgetattr fills the zeroed struct for a valid fd; it fails (ENOTTY) when stdin is not a terminal,
        // and then nothing is changed: keys are simply not read.
        let saved = unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            (libc::tcgetattr(fd, &mut t) == 0).then_some(t)
        };
        if let Some(mut raw) = saved {
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            raw.c_cc[libc::VMIN] = 0;
            raw.c_cc[libc::VTIME] = 0;
            // SAFETY: the settings just read, changed in two flags and two control characters.
            if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[?1049h\x1b[?25l")?;
        out.flush()?;
        Ok(Screen { saved })
    }

    /// Replaces the screen's contents.
    pub fn draw(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(b"\x1b[H\x1b[2J")?;
        out.write_all(text.replace('\n', "\r\n").as_bytes())?;
        out.flush()
    }

    /// Waits up to `timeout` for a key; Some(byte) if one came. Returns early on a signal.
    pub fn key(&self, timeout: std::time::Duration) -> io::Result<Option<u8>> {
        if self.saved.is_none() {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        let stdin = io::stdin();
        match super::poll::wait_readable(&stdin, timeout) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into a one-byte buffer from a valid fd.
        let n = unsafe { libc::read(stdin.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        Ok((n == 1).then_some(b[0]))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = out.flush();
        if let Some(t) = self.saved {
            // SAFETY: the settings read at open, put back on the same fd.
            unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSANOW, &t) };
        }
    }
}
