//! The server's log: one line per event on its stderr, with a UTC time and
//! a level, filtered by the level chosen with `--log-level`.

use std::fmt::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::event::{PollFd, PollFlags};
use rustix::time::Timespec;

/// How much the server says. Each level includes those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// The server cannot go on.
    Error = 0,
    /// Something went wrong for one client, or needs the operator's eye.
    Warning = 1,
    /// One line per run, and the server's own events.
    Info = 2,
    /// Everything, including each refused or broken request.
    Debug = 3,
}

impl Level {
    /// The level named `name` (`error`, `warning`, `info`, `debug`).
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name {
            "error" => Level::Error,
            "warning" => Level::Warning,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level that is written.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Writes `message` to stderr if `level` is enabled.
///
/// The whole line goes out in one `write`, so that lines of the server and
/// of another process appending to the same log (its replacement, after an
/// edit of the served code) never interleave. A log that cannot be written
/// (a full disk, a closed pipe) loses the line, never the server; so does
/// one that cannot take it now (a pipe nobody reads, a terminal stopped
/// with Ctrl-S), where a blocking `write` would stop the serving loop.
pub fn log(level: Level, message: &str) {
    if level as u8 <= LEVEL.load(Ordering::Relaxed) {
        write_now(std::io::stderr().as_fd(), line(level, message).as_bytes());
    }
}

/// Writes `bytes` to `fd` in one `write` if `fd` can take them without
/// waiting. `O_NONBLOCK` is not an option: the terminal or pipe is shared
/// with the shell and other processes, whose reads and writes it would
/// change. `poll` says a pipe has room for at least `PIPE_BUF` bytes, which
/// a line of that size fills at once, and a terminal little output pending.
fn write_now(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(1))
        && fds[0].revents().contains(PollFlags::OUT)
    {
        let _ = rustix::io::write(fd, bytes);
    }
}

/// One line of the log, with its newline.
fn line(level: Level, message: &str) -> String {
    let mut line = String::with_capacity(64 + message.len());
    line.push_str("warmfork-server: ");
    write_utc_now(&mut line);
    let _ = writeln!(line, " {}: {message}", level.name());
    line
}

/// Logs a warning.
pub fn warning(message: &str) {
    log(Level::Warning, message);
}

/// Logs an informational event.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Appends the current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn write_utc_now(out: &mut String) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::{Level, civil_from_days, line};

    #[test]
    fn a_line_is_whole_time_level_and_message() {
        let line = line(Level::Warning, "refused a request");
        let rest = line.strip_prefix("warmfork-server: ").expect("the prefix");
        let (time, rest) = rest.split_once(' ').expect("a time");
        assert_eq!(time.len(), "2026-11-23T04:41:34.060Z".len(), "{time}");
        assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");
        assert_eq!(rest, "warning: refused a request\n");
    }

    #[test]
    fn days_become_dates_across_leap_years_and_eras() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
