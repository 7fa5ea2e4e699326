//! The listening socket: a private directory, one server per socket, and a
//! socket that appears only when it is ready.
//!
//! * The directory must belong to the server's user and be writable by no
//!   one else; a directory the server creates is made 0700 whatever the
//!   umask. Anyone who can write there could replace the socket.
//! * `NAME.sock.lock` is held with `flock` for the server's life: a second
//!   server on the same socket fails at once, naming the first, and a socket
//!   left behind by a server that died holds no lock, so it is replaced.
//! * The socket is bound at a temporary name, made 0600, and renamed into
//!   place, so a client never connects to a half-made socket.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use warmfork::socket_path::MAX_SOCKET_PATH_LEN;

/// How many connections may wait to be accepted.
const BACKLOG: i32 = 1024;

/// A bound, listening server socket and the lock that makes it ours.
#[derive(Debug)]
pub struct Listener {
    socket: OwnedFd,
    lock: OwnedFd,
    path: PathBuf,
    /// The socket file this listener created, to remove at the end; `None`
    /// for a socket handed over by systemd, which owns its file.
    inode: Option<(u64, u64)>,
    /// The socket file is another server's: set once this one handed the
    /// socket to a replacement, and, in a replacement, until it is ready.
    handed_over: AtomicBool,
}

impl Listener {
    /// Creates the socket at `path`, replacing a stale one; see the module
    /// documentation for what is checked.
    pub fn bind(path: &Path) -> Result<Listener, String> {
        let dir = private_socket_dir(path)?;
        let length = path.as_os_str().len();
        if length > MAX_SOCKET_PATH_LEN {
            return Err(format!(
                "socket path {} is {length} bytes, longer than the {MAX_SOCKET_PATH_LEN} a Unix socket allows; \
                 choose a shorter one (--socket or WARMFORK_SOCKET)",
                path.display()
            ));
        }
        not_in_the_way(path)?;
        let lock = lock(path)?;
        let temp = temporary_name(path, dir);
        let _ = std::fs::remove_file(&temp);
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| format!("cannot create a socket: {e}"))?;
        let address = SocketAddrUnix::new(temp.as_path()).map_err(|_| {
            format!(
                "socket path {} is too long for a Unix socket",
                temp.display()
            )
        })?;
        // bind() creates the file with the umask applied; the directory is
        // private anyway, and the mode is fixed right after, before the
        // socket is visible under its real name.
        rustix::net::bind(&socket, &address)
            .map_err(|e| format!("cannot bind {}: {e}", temp.display()))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| rustix::net::listen(&socket, BACKLOG).map_err(Into::into))
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(format!(
                "cannot put the socket in place at {}: {e}",
                path.display()
            ));
        }
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        Ok(Listener {
            socket,
            lock,
            path: path.to_owned(),
            inode: Some((meta.dev(), meta.ino())),
            handed_over: AtomicBool::new(false),
        })
    }

    /// Takes over a listening Unix socket passed as descriptor `fd` by
    /// systemd socket activation. The lock is taken as for a bound socket,
    /// so a second server on the same path still fails; the socket file is
    /// systemd's and is left in place at the end.
    ///
    /// A server replacing another (see `reload.rs`) also gets the lock, as
    /// `lock_fd`, still held. The socket file stays the other server's, and
    /// the lock file names it, until this one is ready ([`Listener::own`]):
    /// a replacement that fails to warm up leaves both to it.
    ///
    /// `path` names the socket when the address it was bound at is not its
    /// name (a server binds at a temporary name and renames it into place).
    /// A replacement's socket file is its own to remove once it is ready if
    /// `owns_file`; not if it is systemd's, handed over from a server that
    /// systemd started.
    pub fn inherit(
        fd: RawFd,
        lock_fd: Option<RawFd>,
        path: Option<&Path>,
        owns_file: bool,
    ) -> Result<Listener, String> {
        // SAFETY: systemd passes the listening socket as this descriptor and
        // nothing else in the process uses it; from here on it is ours.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let listening = rustix::net::sockopt::socket_acceptconn(&socket).unwrap_or(false);
        let address = rustix::net::getsockname(&socket).ok();
        let bound = address
            .and_then(|a| SocketAddrUnix::try_from(a).ok())
            .and_then(|a| {
                a.path()
                    .map(|p| PathBuf::from(OsStr::from_bytes(p.to_bytes())))
            });
        let (true, Some(bound)) = (listening, bound) else {
            return Err(format!(
                "descriptor {fd} from LISTEN_FDS is not a listening Unix socket with a path"
            ));
        };
        let path = path.map_or(bound, Path::to_owned);
        rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC)
            .and_then(|()| rustix::fs::fcntl_setfl(&socket, OFlags::NONBLOCK))
            .map_err(|e| format!("cannot set up the socket from LISTEN_FDS: {e}"))?;
        let handed_over_lock = lock_fd.is_some();
        let lock = match lock_fd {
            // SAFETY: as for `fd`: the descriptor was handed to this process
            // for this purpose, already holding the lock.
            Some(lock_fd) => unsafe { OwnedFd::from_raw_fd(lock_fd) },
            None => lock(&path)?,
        };
        rustix::io::fcntl_setfd(&lock, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| format!("cannot set up the inherited lock: {e}"))?;
        // A socket handed over by a server is this server's to remove at the
        // end; one from systemd belongs to systemd.
        let inode = if handed_over_lock && owns_file {
            std::fs::symlink_metadata(&path)
                .ok()
                .map(|m| (m.dev(), m.ino()))
        } else {
            None
        };
        Ok(Listener {
            socket,
            lock,
            path,
            inode,
            handed_over: AtomicBool::new(handed_over_lock),
        })
    }

    /// Makes the socket file this server's: its pid in the lock file (for
    /// `status` and `stop`), and the file removed when it stops. Called by
    /// a server replacing another once it is ready, and by the other when
    /// it takes the socket back from a replacement that failed.
    pub fn own(&self) {
        name_holder(&self.lock);
        self.handed_over.store(false, Ordering::Relaxed);
    }

    /// Records that a replacement server now owns the socket file, and lets
    /// go of this server's hold on the lock and on the socket. Each is one
    /// open file shared with the replacement, alive until its last
    /// descriptor closes: kept here, they would outlive the replacement
    /// while this server finishes its runs. `stop` (which waits for the
    /// lock) would wait for those runs too, `status` name a stopped server,
    /// a new server be turned away, and clients of a replacement that died
    /// would wait in a backlog no one accepts from, rather than be refused
    /// (and start a server, or fall back). The descriptors' numbers stay the
    /// listener's, now on /dev/null, so everything that holds them (workers
    /// close them) stays right.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
        if let Ok(null) =
            rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        {
            for fd in [&self.lock, &self.socket] {
                // SAFETY: the listener's own descriptors; dup3 replaces what
                // each refers to in one step, so the number is never free
                // for another to take. Unlocking instead would unlock the
                // replacement's hold as well (flock locks belong to the
                // open file).
                unsafe {
                    libc::dup3(null.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC);
                }
            }
        }
    }

    /// Whether the socket file is this server's (created by it, or handed
    /// over by the server that created it), not systemd's.
    pub fn owns_file(&self) -> bool {
        self.inode.is_some()
    }

    /// The listening socket.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Every descriptor the listener holds, so a worker can close them all.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.socket.as_fd(), self.lock.as_fd()]
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the socket file this listener created has left its path:
    /// deleted, or its directory removed or replaced (a user's runtime
    /// directory goes at logout). No new client can reach this server then,
    /// nor can `status` and `stop`, whose lock file may have gone with it.
    /// A socket systemd owns, or one handed to another server, is not this
    /// one's to watch.
    pub fn is_gone(&self) -> bool {
        let Some(inode) = self.inode else {
            return false;
        };
        if self.handed_over.load(Ordering::Relaxed) {
            return false;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != inode,
            // Only what says the file is not there: a failure to look
            // (out of memory, say) is no reason to stop.
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ),
        }
    }

    /// Removes the socket file if it is still the one this listener created
    /// (another server may have replaced it after this one was stopped).
    pub fn remove(&self) {
        let ours = !self.handed_over.load(Ordering::Relaxed)
            && self.inode.is_some_and(|inode| {
                std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == inode)
            });
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who is at the other end of a client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The user the client runs as.
    pub uid: rustix::process::Uid,
    /// The client's pid, 0 when this server's pid namespace cannot name it
    /// (a client on the host of a server in a container).
    pub pid: libc::pid_t,
}

/// The credentials of the process that connected on `socket`
/// (`SO_PEERCRED`). rustix's `socket_peercred` fails on a peer whose pid
/// reads 0, which would turn every client outside this server's pid
/// namespace away.
pub fn peer(socket: BorrowedFd<'_>) -> std::io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given, as
    // SO_PEERCRED expects.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        uid: rustix::process::Uid::from_raw(cred.uid),
        pid: cred.pid,
    })
}

/// The directory of the socket `path`, made sure of with [`private_dir`].
pub fn private_socket_dir(path: &Path) -> Result<&Path, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    private_dir(dir)?;
    Ok(dir)
}

/// Makes sure `dir` exists, belongs to this user and is writable by no one
/// else, creating it 0700 if it is missing, and that no other user can swap
/// it for a directory of theirs (see [`secure_ancestors`]).
fn private_dir(dir: &Path) -> Result<(), String> {
    let uid = rustix::process::geteuid().as_raw();
    // Above it first: nothing is made where it could be swapped.
    let written =
        std::path::absolute(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    secure_ancestors(&written, uid)?;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // mkdir applies the umask, which can only remove bits; 0700 stands.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create the socket directory {}: {e}",
                dir.display()
            ));
        }
    }
    let mut meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    if meta.file_type().is_symlink() {
        // A link of the user's or root's is as safe as where it leads: only
        // its owner can point it elsewhere. Another's could be, at any time.
        if !trusted_link(meta.uid(), uid) {
            return Err(format!(
                "socket directory {} is a symbolic link of uid {}, who could point it elsewhere; \
                 name the directory it leads to (--socket or WARMFORK_SOCKET)",
                dir.display(),
                meta.uid()
            ));
        }
        let target = std::fs::canonicalize(dir)
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        secure_ancestors(&target, uid)?;
        meta = std::fs::metadata(&target)
            .map_err(|e| format!("cannot stat {}: {e}", target.display()))?;
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != uid {
        return Err(format!(
            "socket directory {} belongs to uid {}, not to you (uid {uid}); choose another with --socket or WARMFORK_SOCKET",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "socket directory {} is writable by other users (mode {:o}), who could replace the socket; \
             use a private directory (chmod go-w, or choose another with --socket)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Whether a directory or link of `owner` is safe from others for this
/// user `uid`: root's or the user's own. In a user namespace that does
/// not map root (`unshare -r`, rootless containers), the files of users it
/// does not map, root's among them (`/` itself), show as the overflow uid;
/// those directories are trusted too, or nothing could be (they are the
/// host's, and the kernel does not say whose), but links are not (see
/// [`trusted_link`]).
fn trusted(owner: u32, uid: u32) -> bool {
    owner == 0 || owner == uid || Some(owner) == *UNMAPPED_OWNER
}

/// Whether a symbolic link of `owner` may be followed to the socket: only
/// root's and the user's own. Not the overflow uid's, even in a user
/// namespace: that may be another user of the host, free to repoint it.
fn trusted_link(owner: u32, uid: u32) -> bool {
    owner == 0 || owner == uid
}

/// The uid unmapped owners show as, in a user namespace that does not map
/// root; `None` where the namespace maps it (the usual, initial one).
static UNMAPPED_OWNER: std::sync::LazyLock<Option<u32>> = std::sync::LazyLock::new(|| {
    let map = std::fs::read_to_string("/proc/self/uid_map").ok()?;
    let maps_root = map.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some("0") && fields.next() == Some("0")
    });
    if maps_root {
        return None;
    }
    std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()?
        .trim()
        .parse()
        .ok()
});

/// Makes sure no other user can swap the directory `dir` (an absolute path,
/// which need not exist yet) for a directory of theirs: every directory
/// above it, and every link on the way to it, belongs to root or to this
/// user, and those writable by others are sticky (`/tmp`), so that only an
/// entry's owner can rename it, as ssh's `StrictModes` asks of a user's
/// files.
fn secure_ancestors(dir: &Path, uid: u32) -> Result<(), String> {
    let Some(parent) = dir.parent() else {
        return Ok(()); // `/` itself
    };
    for link in parent.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(link) else {
            continue; // `canonicalize` below says why
        };
        if meta.file_type().is_symlink() && !trusted_link(meta.uid(), uid) {
            return Err(format!(
                "{} on the way to the socket directory is a link of uid {}, who could point it elsewhere; \
                 choose a socket path through directories of yours or root's (--socket or WARMFORK_SOCKET)",
                link.display(),
                meta.uid()
            ));
        }
    }
    let real = match std::fs::canonicalize(parent) {
        Ok(real) => real,
        // Making the socket directory says so, naming it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot resolve {}: {e}", parent.display())),
    };
    for ancestor in real.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .map_err(|e| format!("cannot stat {}: {e}", ancestor.display()))?;
        let mode = meta.mode() & 0o7777;
        if !trusted(meta.uid(), uid) {
            return Err(format!(
                "{} above the socket directory {} belongs to uid {}, who could swap the directory \
                 for one of theirs; choose a socket path through directories of yours or root's \
                 (--socket or WARMFORK_SOCKET)",
                ancestor.display(),
                dir.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{} above the socket directory {} is writable by others and not sticky (mode {mode:o}), \
                 so anyone could swap the directory for one of theirs; make it sticky (chmod +t) or \
                 choose another socket path (--socket or WARMFORK_SOCKET)",
                ancestor.display(),
                dir.display(),
            ));
        }
    }
    Ok(())
}

/// Takes the lock that makes this the one server on `path`.
fn lock(path: &Path) -> Result<OwnedFd, String> {
    let lock_path = with_suffix(path, ".lock");
    let fd = rustix::fs::open(
        &lock_path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
    match lock_exclusive(&fd) {
        Ok(()) => {
            name_holder(&fd);
            Ok(fd)
        }
        Err(Errno::WOULDBLOCK) => {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
            let holder = holder.trim();
            let path = path.display();
            Err(format!(
                "another warmfork server (pid {holder}) is already serving {path}; \
                 stop it first (warmfork-server stop --socket {path}, or kill {holder})"
            ))
        }
        Err(e) => Err(format!("cannot lock {}: {e}", lock_path.display())),
    }
}

/// Takes the exclusive lock on `lock`, or says why not. `status` and `stop`
/// hold a shared lock for an instant to see whether a server runs: a lock
/// refused that soon after is tried again, for [`LOCK_PATIENCE`] in all.
fn lock_exclusive(lock: &OwnedFd) -> rustix::io::Result<()> {
    let mut pause = std::time::Duration::from_millis(1);
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match rustix::fs::flock(lock, FlockOperation::NonBlockingLockExclusive) {
            Err(Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            outcome => return outcome,
        }
    }
}

/// How long [`lock_exclusive`] keeps trying a lock another process holds.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes this process's pid into the lock file, for `status`, `stop` and
/// the message a second server gets.
fn name_holder(lock: &OwnedFd) {
    let _ = rustix::fs::ftruncate(lock, 0);
    let _ = rustix::io::pwrite(lock, format!("{}\n", std::process::id()).as_bytes(), 0);
}

/// Refuses to bind over anything at `path` but a socket (one left by a
/// server that died is replaced): the rename that puts the socket in place
/// would otherwise destroy a file given by mistake as `--socket`.
fn not_in_the_way(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    let what = if kind.is_socket() {
        return Ok(());
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "not a socket"
    };
    Err(format!(
        "{} is {what}, not a socket; choose another path (--socket or WARMFORK_SOCKET), or remove it",
        path.display()
    ))
}

/// Where the socket is bound before it is renamed into place: `PATH.PID.tmp`,
/// or `DIR/.PID.tmp` when that would not fit a Unix socket address.
fn temporary_name(path: &Path, dir: &Path) -> PathBuf {
    let pid = std::process::id();
    let beside = with_suffix(path, &format!(".{pid}.tmp"));
    if beside.as_os_str().len() <= MAX_SOCKET_PATH_LEN {
        return beside;
    }
    dir.join(format!(".{pid}.tmp"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().as_bytes().to_vec();
    name.extend_from_slice(suffix.as_bytes());
    PathBuf::from(OsStr::from_bytes(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_for_an_instant_by_status_is_waited_for() {
        let dir = std::env::temp_dir().join(format!("warmfork-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let socket = dir.join("s.sock");
        // What `warmfork-server status` does: a shared lock, held briefly.
        let probe = std::fs::File::create(with_suffix(&socket, ".lock")).expect("the lock file");
        rustix::fs::flock(&probe, FlockOperation::LockShared).expect("a shared lock");
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(probe);
        });
        let taken = lock(&socket);
        release.join().expect("the probe's thread");
        std::fs::remove_dir_all(&dir).expect("scratch removed");
        assert!(taken.is_ok(), "{taken:?}");
    }

    #[test]
    fn a_lock_another_server_holds_is_refused() {
        let dir = std::env::temp_dir().join(format!("warmfork-lock-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let socket = dir.join("s.sock");
        let first = lock(&socket).expect("the first server's lock");
        let second = lock(&socket);
        drop(first);
        std::fs::remove_dir_all(&dir).expect("scratch removed");
        assert!(second.is_err_and(|why| why.contains("already serving")));
    }
}
