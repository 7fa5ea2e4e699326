//! The client's own failures: one line on stderr, one exit code each.
//!
//! The codes sit above the range a shell uses for deaths by signal
//! (128 + N, N ≤ 64), so a script can tell "warmfork could not run the
//! program" from anything the program itself returns. They are documented in
//! the README.

use core::fmt::{self, Write};

use rustix::io::Errno;
use warmfork::{ErrorCode, WireError};

/// The server refused the run: an option a warm interpreter cannot honour,
/// a request beyond the limits, or a user it does not serve.
pub const EXIT_REFUSED: i32 = 201;
/// No server could be reached at the socket path.
pub const EXIT_NO_SERVER: i32 = 202;
/// The server broke the protocol or went away before the program's status.
pub const EXIT_PROTOCOL: i32 = 203;
/// A system call the client needs failed.
pub const EXIT_SYSTEM: i32 = 204;

/// Why the client could not deliver the program's status.
#[derive(Debug)]
pub enum Failure<'a> {
    /// `connect` to the socket failed.
    NoServer {
        path: &'a [u8],
        name: &'a [u8],
        /// `WARMFORK_SOCKET` named the path.
        explicit: bool,
        errno: Errno,
    },
    /// The server at the socket runs as another user.
    ForeignServer { path: &'a [u8], uid: u32 },
    /// The socket's directory could let someone else swap the socket.
    UnsafeDir {
        dir: &'a [u8],
        owner: u32,
        mode: u32,
    },
    /// The socket path from the environment does not fit a `sockaddr_un`.
    PathTooLong,
    /// The command line and environment exceed the protocol's frame limit.
    TooLarge,
    /// The client has more descriptors besides 0, 1 and 2 than a run can
    /// pass to the program.
    TooManyFds { count: usize },
    /// The server answered with an `ERROR` frame.
    Refused { code: ErrorCode, message: &'a [u8] },
    /// The server sent something that is not protocol version 1.
    Protocol(WireError),
    /// The connection ended after `STARTED`, before an `EXIT` or `ERROR` frame.
    Lost,
    /// The connection ended before `STARTED`: the server stopped (or failed
    /// to warm up) with the request still waiting, and nothing ran.
    NotStarted,
    /// A system call failed.
    System { call: &'static str, errno: Errno },
    /// The server command from `WARMFORK_SERVER` failed, or no server
    /// listened in time.
    ServerDidNotStart {
        path: &'a [u8],
        command: &'a [u8],
        end: CommandEnd,
    },
    /// The fallback interpreter could not be run.
    Fallback { name: &'a [u8], errno: Errno },
    /// A bug in the client (reached only through the panic handler).
    Internal,
}

/// How a server start from `WARMFORK_SERVER` failed.
#[derive(Clone, Copy, Debug)]
pub enum CommandEnd {
    /// The command exited with this status, not 0.
    Exited(i32),
    /// The command died of this signal.
    Killed(i32),
    /// Nothing listened on the socket in time: the command still runs, or
    /// (`exited`) it exited 0, as one that starts a server in the
    /// background does.
    NotListening { exited: bool },
}

impl Failure<'_> {
    /// Whether this is a server that takes no connection now (its backlog is
    /// full), rather than none at all: worth waiting for.
    pub fn is_busy_server(&self) -> bool {
        matches!(self, Failure::NoServer { errno, .. } if *errno == Errno::AGAIN)
    }

    /// Whether plain python could do what warmfork could not: there is no
    /// server, or the server cannot honour this request.
    pub fn allows_fallback(&self) -> bool {
        match *self {
            Failure::NoServer { errno, .. } => {
                matches!(errno, Errno::NOENT | Errno::CONNREFUSED | Errno::NOTSOCK)
            }
            Failure::Refused { code, .. } => {
                matches!(code, ErrorCode::Unsupported | ErrorCode::UnsupportedVersion)
            }
            // Plain python inherits them all.
            Failure::TooManyFds { .. } => true,
            // The program never started: running it now runs it once.
            Failure::NotStarted => true,
            // No server is running; but say why, or a broken server command
            // would go unnoticed, each run paying for another start.
            Failure::ServerDidNotStart { .. } => true,
            _ => false,
        }
    }

    /// Whether the failure is worth a line on stderr even when the fallback
    /// interpreter runs the program instead.
    pub fn warns_before_fallback(&self) -> bool {
        matches!(
            self,
            Failure::ServerDidNotStart { .. } | Failure::NotStarted
        )
    }

    /// Prints the failure as one line on stderr and exits with its code,
    /// with the user's terminal as it was found (`WARMFORK_PTY=1`).
    pub fn exit(&self) -> ! {
        crate::terminal::restore();
        crate::syscall::exit(self.report())
    }

    /// Prints the failure as one line on stderr; returns its exit code.
    pub fn report(&self) -> i32 {
        let mut line = Line::new();
        let code = self.describe(&mut line);
        line.push(b"\n");
        // Nothing useful is left to do if stderr is gone.
        let _ = rustix::io::write(crate::start::stdio_fd(2), line.as_bytes());
        code
    }

    fn describe(&self, line: &mut Line) -> i32 {
        line.push(b"warmfork: ");
        match *self {
            Failure::NoServer {
                path,
                name,
                explicit,
                errno,
            } => {
                line.push(b"cannot reach server at ");
                line.push(path);
                line.push(b": ");
                line.push_errno(errno);
                if errno == Errno::NOTSOCK {
                    line.push(b" (a file or directory is in the way); point WARMFORK_SOCKET at a server's socket");
                } else if explicit {
                    line.push(
                        b"; start one with `warmfork-server &`, which serves $WARMFORK_SOCKET too",
                    );
                } else if name == warmfork::socket_path::DEFAULT_NAME {
                    line.push(b"; start one with `warmfork-server &` (or set WARMFORK_SOCKET)");
                } else {
                    line.push(b"; start it with `warmfork-server --name ");
                    line.push(name);
                    line.push(b" &`");
                }
                EXIT_NO_SERVER
            }
            Failure::ForeignServer { path, uid } => {
                line.push(b"the server at ");
                line.push(path);
                let _ = write!(
                    line,
                    " runs as uid {uid}, not as you; refusing to send it your environment and files"
                );
                EXIT_NO_SERVER
            }
            Failure::UnsafeDir { dir, owner, mode } => {
                line.push(b"refusing the socket in ");
                line.push(dir);
                let _ = write!(
                    line,
                    " (owner uid {owner}, mode {mode:o}): another user could replace it{}; \
                     use a directory of your own that only you can write to (WARMFORK_SOCKET)",
                    if mode == 0o777 {
                        ", or it is a symbolic link"
                    } else {
                        ""
                    }
                );
                EXIT_NO_SERVER
            }
            Failure::PathTooLong => {
                line.push(b"socket path is longer than the 107 bytes a Unix socket allows; set WARMFORK_SOCKET to a shorter path");
                EXIT_SYSTEM
            }
            Failure::TooLarge => {
                line.push(b"arguments and environment exceed the protocol's 8 MiB limit");
                EXIT_REFUSED
            }
            Failure::TooManyFds { count } => {
                let _ = write!(
                    line,
                    "{count} descriptors besides 0, 1 and 2 are open, and a run passes at most {} to the program; \
                     close some, or set WARMFORK_FALLBACK=python3 to run plain python instead",
                    warmfork::request::MAX_EXTRA_FDS
                );
                EXIT_REFUSED
            }
            Failure::Refused { code, message } => {
                if code != ErrorCode::Unsupported {
                    line.push(b"server refused the run: ");
                }
                line.push(message);
                EXIT_REFUSED
            }
            Failure::Protocol(error) => {
                let _ = write!(
                    line,
                    "bad reply from server ({error}); is it a warmfork server of this version?"
                );
                EXIT_PROTOCOL
            }
            Failure::Lost => {
                line.push(b"the server closed the connection before the program finished (server stopped or crashed)");
                EXIT_PROTOCOL
            }
            Failure::NotStarted => {
                line.push(b"the server closed the connection before the program started (it was stopping, \
                    or failed to start); nothing ran");
                EXIT_NO_SERVER
            }
            Failure::System { call, errno } => {
                line.push(call.as_bytes());
                line.push(b" failed: ");
                line.push_errno(errno);
                EXIT_SYSTEM
            }
            Failure::ServerDidNotStart { path, command, end } => {
                line.push(b"the server started with `");
                line.push(command);
                line.push(b"` (WARMFORK_SERVER) ");
                let _ = match end {
                    CommandEnd::Exited(code) => write!(line, "exited with status {code}"),
                    CommandEnd::Killed(signal) => write!(line, "was killed by signal {signal}"),
                    CommandEnd::NotListening { exited } => {
                        let seconds = crate::autostart::READY_TIMEOUT_MS / 1000;
                        if exited {
                            write!(
                                line,
                                "exited with status 0, and no server listened within {seconds} s \
                                (one it started may serve another socket)"
                            )
                        } else {
                            write!(line, "did not listen within {seconds} s")
                        }
                    }
                };
                line.push(b"; see ");
                line.push(path);
                line.push(b".log");
                EXIT_NO_SERVER
            }
            Failure::Fallback { name, errno } => {
                line.push(b"cannot run the fallback interpreter ");
                line.push(name);
                line.push(b" (WARMFORK_FALLBACK): ");
                line.push_errno(errno);
                EXIT_SYSTEM
            }
            Failure::Internal => {
                line.push(b"internal error; please report this bug");
                EXIT_SYSTEM
            }
        }
    }
}

fn errno_text(errno: Errno) -> &'static [u8] {
    match errno {
        Errno::NOENT => b"no such file or directory",
        Errno::CONNREFUSED => b"connection refused (no server is listening)",
        Errno::ACCESS => b"permission denied",
        Errno::NOTDIR => b"a path component is not a directory",
        Errno::NOTSOCK => b"not a socket",
        Errno::PIPE | Errno::CONNRESET => b"connection reset by the server",
        Errno::MFILE | Errno::NFILE => b"too many open files",
        Errno::NOMEM | Errno::NOBUFS => b"out of memory",
        _ => b"",
    }
}

/// A message assembled on the stack; the client has no allocator.
/// Anything beyond its capacity is cut off.
struct Line {
    buf: [u8; 4608],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 4608],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_errno(&mut self, errno: Errno) {
        match errno_text(errno) {
            b"" => {
                let _ = write!(self, "system error {}", errno.raw_os_error());
            }
            text => self.push(text),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}
