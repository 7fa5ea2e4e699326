//! Finding the server: the socket path rule and `connect`.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::Uid;
use warmfork::socket_path::{DEFAULT_NAME, Inputs, MAX_SOCKET_PATH_LEN, socket_path};

use crate::cstr::CBuf;
use crate::failure::Failure;
use crate::signals::Forwarder;
use crate::start::Process;

/// The socket path chosen by the shared rule (see `warmfork::socket_path`).
pub struct SocketPath {
    buf: [u8; MAX_SOCKET_PATH_LEN],
    len: usize,
    /// The server's name: `default`, or the name this client was invoked by.
    pub name: &'static [u8],
    /// Whether `WARMFORK_SOCKET` named the path (for every name).
    pub explicit: bool,
}

/// The name the client is invoked by selects the server: through a symlink
/// `sage -> warmfork`, it talks to the server named `sage`.
fn server_name(process: &Process) -> &'static [u8] {
    let argv0 = process.args().next().map_or(&b""[..], |arg| arg.to_bytes());
    match argv0.rsplit(|&b| b == b'/').next() {
        Some(b"warmfork") | Some(b"") | None => DEFAULT_NAME,
        Some(name) => name,
    }
}

impl SocketPath {
    /// Applies the rule to this process's environment.
    pub fn of(process: &Process) -> Result<SocketPath, Failure<'static>> {
        let warmfork_socket = process.var(b"WARMFORK_SOCKET");
        let xdg_runtime_dir = process.var(b"XDG_RUNTIME_DIR");
        // The uid only matters for the /tmp fallback; skip the syscall otherwise.
        let needs_uid = [warmfork_socket, xdg_runtime_dir]
            .iter()
            .all(|v| v.is_none_or(<[u8]>::is_empty));
        let inputs = Inputs {
            warmfork_socket,
            xdg_runtime_dir,
            uid: if needs_uid {
                rustix::process::getuid().as_raw()
            } else {
                0
            },
            name: server_name(process),
        };
        let mut buf = [0; MAX_SOCKET_PATH_LEN];
        let len = socket_path(&inputs, &mut buf).map_err(|_| Failure::PathTooLong)?;
        Ok(SocketPath {
            buf,
            len,
            name: inputs.name,
            explicit: warmfork_socket.is_some_and(|path| !path.is_empty()),
        })
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The directory that holds the socket (`.` for a bare name), without
    /// the `/` and `/.` it may end in (`dir//s.sock`, `dir/./s.sock`), which
    /// would make a look at it follow a link there.
    pub fn dir(&self) -> &[u8] {
        let path = self.as_bytes();
        let mut dir = match path.iter().rposition(|&b| b == b'/') {
            Some(end) => &path[..end],
            None => return b".",
        };
        loop {
            match dir {
                [rest @ .., b'/'] | [rest @ .., b'/', b'.'] if !rest.is_empty() => dir = rest,
                _ => break,
            }
        }
        if dir.is_empty() { b"/" } else { dir }
    }
}

/// `socket` + `connect`: a stream connection to a server of this user.
pub fn connect(path: &SocketPath) -> Result<OwnedFd, Failure<'_>> {
    let system = |call| move |errno| Failure::System { call, errno };
    let address = SocketAddrUnix::new(path.as_bytes()).map_err(system("socket address"))?;
    // Non-blocking, so that a server whose backlog is full (it accepts no
    // one: wedged, or busy replacing itself) or whose buffer is full does
    // not keep the client from the signals it holds (see `signals.rs`):
    // connect then fails with EAGAIN, and sending waits in `poll`.
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(system("socket"))?;
    // The client installs no signal handlers, so `connect` cannot see EINTR.
    rustix::net::connect(&socket, &address).map_err(|errno| Failure::NoServer {
        path: path.as_bytes(),
        name: path.name,
        explicit: path.explicit,
        // A regular file or a directory refuses a connection too: say what
        // is in the way rather than that no server listens there.
        errno: if errno == Errno::CONNREFUSED && !is_socket(path.as_bytes()) {
            Errno::NOTSOCK
        } else {
            errno
        },
    })?;
    // The request carries the whole environment and the client's files: only
    // a server running as this user may have them.
    let peer = crate::syscall::peer_uid(socket.as_fd()).map_err(system("SO_PEERCRED"))?;
    let me = rustix::process::geteuid();
    if peer != me {
        return Err(Failure::ForeignServer {
            path: path.as_bytes(),
            uid: peer.as_raw(),
        });
    }
    // And only through a directory no one else can write to: otherwise the
    // socket could be swapped for another between two runs.
    private_dir(path, me)?;
    Ok(socket)
}

/// [`connect`], waiting while the server's backlog is full.
pub fn connect_waiting<'p>(
    path: &'p SocketPath,
    signals: &mut Forwarder,
) -> Result<OwnedFd, Failure<'p>> {
    loop {
        match connect(path) {
            Err(failure) if failure.is_busy_server() => signals.pause(BUSY_PAUSE_MS),
            connected => return connected,
        }
    }
}

/// How long the client waits before it tries a full backlog again.
const BUSY_PAUSE_MS: u32 = 5;

/// Checks that the directory of the socket `path` belongs to `me`, this
/// process's effective user, and that no one else can write to it.
pub fn private_dir(path: &SocketPath, me: Uid) -> Result<(), Failure<'_>> {
    let dir = path.dir();
    let dir_name = CBuf::<{ MAX_SOCKET_PATH_LEN + 1 }>::join(&[dir]).ok_or(Failure::PathTooLong)?;
    // The directory itself, not what a link there leads to: a link (mode
    // 777) can be pointed elsewhere between two runs, unless it is this
    // user's or root's (a home reached through one); then where it leads.
    let system = |errno| Failure::System {
        call: "stat the socket directory",
        errno,
    };
    let mut stat = rustix::fs::lstat(dir_name.as_c_str()).map_err(system)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink
        && (stat.st_uid == me.as_raw() || stat.st_uid == 0)
    {
        stat = rustix::fs::stat(dir_name.as_c_str()).map_err(system)?;
    }
    if stat.st_uid != me.as_raw() || stat.st_mode & 0o022 != 0 {
        return Err(Failure::UnsafeDir {
            dir,
            owner: stat.st_uid,
            mode: stat.st_mode & 0o7777,
        });
    }
    Ok(())
}

/// Whether `path` is a socket (or cannot be looked at: then `connect`'s own
/// error stands).
fn is_socket(path: &[u8]) -> bool {
    CBuf::<{ MAX_SOCKET_PATH_LEN + 1 }>::join(&[path])
        .and_then(|name| rustix::fs::stat(name.as_c_str()).ok())
        .is_none_or(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Socket)
}
