//! What the client needs of `/proc/self/status`, read once: the signals it
//! ignores and its umask.

use rustix::fs::{Mode, OFlags};

use crate::syscall::SigSet;

/// The lines of `/proc/self/status` the request carries.
pub struct ProcStatus {
    /// `SigIgn`: the signals this process ignores, inherited from whoever
    /// started it, as `nohup` ignores SIGHUP. Without `/proc`, asked of
    /// `rt_sigaction`.
    pub ignored: SigSet,
    /// `Umask` (Linux 4.7 and later), if the line is there.
    umask: Option<Mode>,
}

impl ProcStatus {
    pub fn read() -> ProcStatus {
        let Ok(file) = rustix::fs::open(
            "/proc/self/status",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return ProcStatus {
                ignored: ignored_without_proc(),
                umask: None,
            };
        };
        let mut buf = [0u8; 4096];
        let len = rustix::io::read(&file, &mut buf).unwrap_or(0);
        // Closed at once: a client under a low `ulimit -n` needs the number.
        drop(file);
        let status = &buf[..len];
        ProcStatus {
            ignored: number(status, b"SigIgn:", 16).unwrap_or(0),
            umask: number(status, b"Umask:", 8)
                .and_then(|bits| u32::try_from(bits).ok())
                .map(Mode::from_raw_mode),
        }
    }

    /// This process's umask: from the status, or, where the kernel does
    /// not show it there, read the only way `umask` can be read, by setting
    /// it, and put straight back.
    pub fn umask(&self) -> Mode {
        self.umask.unwrap_or_else(|| {
            let umask = rustix::process::umask(Mode::empty());
            rustix::process::umask(umask);
            umask
        })
    }
}

/// The signals this process ignores, asked one by one (a `/proc` that is
/// not mounted cannot say): those `nohup` or a shell's `&` set.
fn ignored_without_proc() -> SigSet {
    (1..=64)
        .filter(|&signal| crate::syscall::is_ignored(signal))
        .fold(0, |set, signal| set | 1 << (signal - 1))
}

/// The signals another process (the worker) ignores, from its
/// `/proc/PID/status` at `path`; `None` when that cannot be read.
pub fn ignored_by(path: &core::ffi::CStr) -> Option<SigSet> {
    let mut buf = [0u8; 4096];
    number(read_file(path, &mut buf).ok()?, b"SigIgn:", 16)
}

/// The start of the (small, `/proc`) file at `path`, read into `buf`.
pub fn read_file<'b>(
    path: &core::ffi::CStr,
    buf: &'b mut [u8],
) -> Result<&'b [u8], rustix::io::Errno> {
    let file = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let len = rustix::io::read(&file, &mut *buf)?;
    Ok(&buf[..len])
}

/// The number, in `radix`, of the line of `status` that starts with `name`.
fn number(status: &[u8], name: &[u8], radix: u32) -> Option<u64> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(name))?;
    let mut digits = line
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .peekable();
    digits.peek()?;
    let mut value: u64 = 0;
    for &digit in digits {
        let digit = (digit as char).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some(value)
}
