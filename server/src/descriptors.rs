//! A worker's descriptors: the client's installed at their numbers, and the
//! worker's own kept out of the program's way.
//!
//! A program started by the client under python would have the client's
//! descriptors and nothing else: its first `open` gets the lowest number the
//! client left free. A worker has more: the server's warm state (which the
//! program may rely on, and keeps), the copies of the client's descriptors
//! as they arrived, and what the worker itself needs until it has sent the
//! status (the connection, a learner's pagemap). The copies are closed once
//! installed, and what the worker needs lives at [`high_floor`] or above,
//! `FD_CLOEXEC`, where no program that opens files in the usual way meets it.

use std::os::fd::{AsRawFd, RawFd};

use rustix::fd::{AsFd, OwnedFd};
use rustix::process::Resource;
use warmfork::{ErrorCode, FdSet, RunRequest};

/// Where the worker's own descriptors go, unless the descriptor limit is
/// lower: high enough for programs that open files to never reach it, low
/// enough that the kernel's descriptor table stays small (it grows to the
/// highest number in use, and a table of a million entries, the limit in
/// many containers, would cost every worker megabytes).
const HIGH_FD: u64 = 1000;

/// The lowest number [`move_high`] uses: [`HIGH_FD`], or less when the
/// soft limit on descriptors leaves no room there.
pub fn high_floor() -> RawFd {
    let limit = rustix::process::getrlimit(Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    HIGH_FD.min(limit.saturating_sub(24)).max(3) as RawFd
}

/// A copy of `fd` at the lowest free number at [`high_floor`] or above
/// that is not in `avoid` (sorted), `FD_CLOEXEC`; the caller closes the
/// original.
pub fn move_high(fd: impl AsFd, avoid: &[RawFd]) -> Result<OwnedFd, String> {
    let fd = fd.as_fd();
    let mut start = high_floor();
    // A number in `avoid` that the kernel hands out is held until the end,
    // so the next try gets another.
    let mut held = Vec::new();
    loop {
        let copy = rustix::io::fcntl_dupfd_cloexec(fd, start).map_err(|e| {
            let why = if e == rustix::io::Errno::MFILE {
                "this worker is out of descriptors: the server's limit of open files \
                 (its `ulimit -n`) is too low for the client's; raise it where the server \
                 is started"
                    .to_string()
            } else {
                e.to_string()
            };
            format!("cannot move descriptor {}: {why}", fd.as_raw_fd())
        })?;
        if avoid.binary_search(&copy.as_raw_fd()).is_err() {
            return Ok(copy);
        }
        start = copy.as_raw_fd() + 1;
        held.push(copy);
    }
}

/// The numbers the client's descriptors take in the program: 0, 1 and 2,
/// and those of its extra descriptors, sorted.
pub fn targets(request: &RunRequest<'_>) -> Vec<RawFd> {
    // Extra numbers are checked to be increasing, from 3 to `i32::MAX`.
    let extra = request.extra_fds().iter().map(|n| n as RawFd);
    [0, 1, 2].into_iter().chain(extra).collect()
}

/// Installs the client's descriptors, received as `fds` in the order of the
/// request (stdio, working directory, extra ones): stdio as 0, 1 and 2
/// (closed where the client had them closed), each extra one at its number,
/// all without `FD_CLOEXEC` as a child of the client inherits them; enters
/// the working directory (or `/`); and closes every received copy.
///
/// `targets` is [`targets`] of the request. A descriptor that already sits
/// on one of them is replaced: the program sees the client's.
pub fn install(
    set: FdSet,
    fds: Vec<OwnedFd>,
    targets: &[RawFd],
) -> Result<(), (ErrorCode, String)> {
    // What the request carries cannot be used: its fault. A descriptor the
    // worker cannot copy out of the way: the server's.
    let unusable = |message: String| (ErrorCode::BadRequest, message);
    let internal = |message: String| (ErrorCode::Internal, message);
    let mut received = fds.into_iter();
    let mut stdio = [None, None, None];
    for (slot, target) in FdSet::SLOTS[..3].iter().zip(&mut stdio) {
        if set.contains(*slot) {
            *target = received.next();
        }
    }
    let cwd = if set.contains(FdSet::CWD) {
        received.next()
    } else {
        None
    };
    // Every source off the targets first, so that installing one cannot
    // clobber the source of another, and no source is its own target
    // (`dup2` onto itself would leave it `FD_CLOEXEC`).
    let off_targets = |fd: OwnedFd| {
        if targets.binary_search(&fd.as_raw_fd()).is_ok() {
            move_high(&fd, targets)
        } else {
            Ok(fd)
        }
    };
    let stdio = stdio.map(|fd| fd.map(off_targets).transpose());
    let cwd = cwd.map(off_targets).transpose().map_err(internal)?;
    let extra = received
        .map(off_targets)
        .collect::<Result<Vec<_>, _>>()
        .map_err(internal)?;
    let sources = stdio
        .into_iter()
        .chain(extra.into_iter().map(|fd| Ok(Some(fd))));
    for (target, source) in targets.iter().zip(sources) {
        let source = source.map_err(internal)?;
        // SAFETY: plain descriptor operations on numbers this process owns;
        // what sits on a target (the server's stdio, a warm descriptor the
        // client's replaces) is this worker's copy alone.
        let result = unsafe {
            match &source {
                Some(fd) => libc::dup2(fd.as_raw_fd(), *target),
                None => libc::close(*target),
            }
        };
        if result < 0 && source.is_some() {
            let error = std::io::Error::last_os_error();
            // dup2 says EBADF for a number at or above the descriptor limit.
            let why = if error.raw_os_error() == Some(libc::EBADF) {
                " (the number is beyond the server's limit of open files, its \
                 hard `ulimit -n`: raise it where the server is started, or close the \
                 descriptor before running warmfork)"
                    .to_string()
            } else {
                format!(": {error}")
            };
            return Err(unusable(format!("cannot install descriptor {target}{why}")));
        }
    }
    match cwd {
        Some(dir) => rustix::process::fchdir(dir)
            .map_err(|e| unusable(format!("cannot enter the client's working directory: {e}"))),
        None => rustix::process::chdir("/").map_err(|e| internal(format!("cannot enter /: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_descriptor_lands_high_and_skips_the_numbers_to_avoid() {
        let (fd, _other) = rustix::pipe::pipe().expect("a pipe");
        let floor = high_floor();
        let avoid = [floor, floor + 1];
        let moved = move_high(&fd, &avoid).expect("moved");
        assert!(moved.as_raw_fd() >= floor + 2, "{}", moved.as_raw_fd());
        assert!(
            rustix::io::fcntl_getfd(&moved)
                .expect("open")
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
    }
}
