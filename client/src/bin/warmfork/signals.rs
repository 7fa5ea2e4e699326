//! Forwarding the signals the client receives to the program it runs.
//!
//! The program runs in a worker of the server, not under the client, so the
//! terminal's Ctrl-C and Ctrl-Z, `kill`, and window resizes reach only the
//! client. The client blocks those signals from the start and reads them
//! from a signalfd, so none is lost and none ends the client before the
//! program's status is known: a signal that arrives before the worker is
//! known is kept and delivered once it is. But not for ever: python would
//! have ended at once, and a server that is busy replacing itself, still
//! starting or wedged may not start the program for a long while, so a
//! signal that would end python and has waited [`HOLD_NS`] for the worker ends
//! the client instead (the server then drops the run). Signals go to the
//! worker through the pidfd it sends with `STARTED`, which cannot name a
//! recycled pid.
//!
//! A signal the terminal sent (Ctrl-C, Ctrl-Z, Ctrl-\\, a resize, a hang-up)
//! went to the client's whole foreground process group, which under python
//! holds the program's children too: it goes to the worker's process group
//! (the worker leads one, and the program's children are in it), so that
//! `os.system("make")` stops on Ctrl-C and a child pauses on Ctrl-Z as
//! under python. So does SIGCONT, which `fg` and `bg` send to the whole job.
//! A signal sent with `kill` to the client goes to the worker alone.
//!
//! A pidfd names a process group only from Linux 6.9. Before, the group is
//! named by its number: the worker's pid (it leads its own session, so its
//! group cannot change), as the pidfd's `fdinfo` gives it while the worker
//! has not been reaped, so not a recycled number when it is read (a worker
//! reaped between that read and the signal would have to see its number
//! given to another group leader in between). A `/proc` of another pid
//! namespace numbers processes differently: then the worker alone is
//! signalled.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use warmfork::socket_path::Decimal;

use crate::cstr::CBuf;
use crate::proc_status::read_file;
use crate::request::decimal;
use crate::syscall::{self, SigSet, bit};

/// Signals the program gets exactly as the client got them: every signal
/// that a process can catch and that would otherwise end or act on the
/// client, but those that only the client's own faults raise (SIGSEGV,
/// SIGBUS, SIGILL, SIGFPE, SIGSYS, SIGTRAP), those of its own children,
/// terminal and pipes (SIGCHLD, SIGTTIN, SIGTTOU, SIGPIPE, SIGURG), and
/// the two real-time signals the C library keeps for itself (32 and 33).
const FORWARDED: SigSet = bit(libc_sig::INT)
    | bit(libc_sig::TERM)
    | bit(libc_sig::HUP)
    | bit(libc_sig::QUIT)
    | bit(libc_sig::ABRT)
    | bit(libc_sig::USR1)
    | bit(libc_sig::USR2)
    | bit(libc_sig::WINCH)
    | bit(libc_sig::ALRM)
    | bit(libc_sig::CONT)
    | bit(libc_sig::STKFLT)
    | bit(libc_sig::XCPU)
    | bit(libc_sig::XFSZ)
    | bit(libc_sig::VTALRM)
    | bit(libc_sig::PROF)
    | bit(libc_sig::IO)
    | bit(libc_sig::PWR)
    | REAL_TIME;

/// The forwarded signals whose default action ends a process.
const ENDS_PROCESS: SigSet = FORWARDED & !(bit(libc_sig::CONT) | bit(libc_sig::WINCH));

/// Signals that shells send a whole job, python's children with it:
/// `timeout` (SIGTERM, or SIGINT with `-s INT`), `kill %1`, `kill -INT
/// -PGID` and a shell's SIGHUP to its jobs as its terminal closes. The
/// client cannot tell a signal sent to its process group from one sent to
/// it alone, but it can tell who sent it: from the job (see
/// [`sent_by_the_job`]), such a signal goes to the program's process group
/// too; from anyone else (`kill -HUP PID` to have a program reload), to the
/// program alone, so that its children live on as python's would.
const ENDS_THE_JOB: SigSet = bit(libc_sig::TERM) | bit(libc_sig::HUP) | bit(libc_sig::INT);

/// How long a signal that would end python waits for the worker to be known
/// before it ends the client instead, counted from the first such signal:
/// long enough for a server that is merely busy, short enough for a person
/// pressing Ctrl-C.
const HOLD_NS: u64 = 1_000_000_000;

/// The longest the client sleeps, while it sends its request, before it
/// looks at the signals that have arrived.
const WAIT_MS: u32 = 10;

/// SIGRTMIN (34, as the C library numbers it) to SIGRTMAX (64).
const REAL_TIME: SigSet = !0 << 33;

/// Ctrl-Z: the program stops, then the client, so the shell shows the job
/// as stopped and nothing is printed over its prompt.
const STOP: SigSet = bit(libc_sig::TSTP);

/// Signal numbers, which are the same on every Linux architecture the client
/// supports.
mod libc_sig {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const ABRT: i32 = 6;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const ALRM: i32 = 14;
    pub const TERM: i32 = 15;
    pub const STKFLT: i32 = 16;
    pub const CONT: i32 = 18;
    pub const STOP: i32 = 19;
    pub const TSTP: i32 = 20;
    pub const XCPU: i32 = 24;
    pub const XFSZ: i32 = 25;
    pub const VTALRM: i32 = 26;
    pub const PROF: i32 = 27;
    pub const WINCH: i32 = 28;
    pub const IO: i32 = 29;
    pub const PWR: i32 = 30;
}

/// `si_code` of a signal the kernel itself sent, as the terminal does.
const SI_KERNEL: i32 = 0x80;

/// The client's signal forwarding for one run.
pub struct Forwarder {
    signals: Option<OwnedFd>,
    worker: Option<OwnedFd>,
    pending: SigSet,
    /// Those of `pending` that go to the worker's process group.
    pending_for_group: SigSet,
    /// When the first signal that would end python came while no worker
    /// was known (`syscall::monotonic_ns`).
    held_since: Option<u64>,
    /// The signals the signalfd takes: blocked, and not ignored.
    watched: SigSet,
}

impl Forwarder {
    /// Blocks the forwarded signals and opens a signalfd for them. Signals
    /// in `ignored` are left alone: they stay ignored for the client, and the
    /// program ignores them too. If this fails the client runs without
    /// forwarding: the signals then act on the client itself, as they would
    /// on any program.
    pub fn install(ignored: SigSet) -> Forwarder {
        let set = (FORWARDED | STOP) & !ignored;
        let signals = match syscall::block(set).and_then(|()| syscall::signalfd(set)) {
            Ok(fd) => Some(fd),
            Err(_) => {
                let _ = syscall::unblock(set);
                None
            }
        };
        Forwarder {
            signals,
            worker: None,
            pending: 0,
            pending_for_group: 0,
            held_since: None,
            watched: set,
        }
    }

    /// The signalfd to poll, if forwarding works.
    pub fn signals(&self) -> Option<BorrowedFd<'_>> {
        self.signals.as_ref().map(AsFd::as_fd)
    }

    /// How long a wait for the worker may last before
    /// [`Forwarder::held_too_long`] is to be asked: what is left of
    /// [`HOLD_NS`] while a signal that would end python is held, no limit
    /// otherwise.
    pub fn hold(&self) -> Option<Timespec> {
        let since = self.held_since.filter(|_| self.worker.is_none())?;
        let left = HOLD_NS.saturating_sub(syscall::monotonic_ns().saturating_sub(since));
        Some(Timespec {
            tv_sec: (left / 1_000_000_000) as i64,
            tv_nsec: (left % 1_000_000_000) as i64,
        })
    }

    /// Takes note of the signals that arrived but were not read from the
    /// signalfd yet (while the client starts a server, it leaves them there
    /// for the wait that forwards them).
    pub fn note_waiting(&mut self) {
        self.note_held(self.waiting_in_kernel());
    }

    /// The signals of the signalfd's set that have arrived and not been
    /// read (a signal whoever started the client blocked and ignored waits
    /// there too, but is not the client's to act on).
    fn waiting_in_kernel(&self) -> SigSet {
        syscall::sigpending().unwrap_or(0) & self.watched
    }

    fn note_held(&mut self, set: SigSet) {
        if self.worker.is_none() && set & ENDS_PROCESS != 0 && self.held_since.is_none() {
            self.held_since = Some(syscall::monotonic_ns());
        }
    }

    /// Waits a few milliseconds for something the client cannot poll for (a
    /// server to listen, or to have room in its backlog), as
    /// [`Forwarder::wait_a_while`] says.
    pub fn pause(&mut self, millis: u32) {
        self.wait_a_while(&mut [], millis);
    }

    /// Waits until `socket` is ready for `flags` (the request's send), or a
    /// few milliseconds, as [`Forwarder::wait_a_while`] says.
    pub fn wait_for(&mut self, socket: BorrowedFd<'_>, flags: PollFlags) {
        self.wait_a_while(&mut [PollFd::from_borrowed_fd(socket, flags)], WAIT_MS);
    }

    /// Polls `fds` for at most `millis`, taking note of the signals that
    /// arrive meanwhile but leaving them in the kernel for the wait that
    /// forwards them (the pseudo-terminal relay acts on SIGWINCH there). A
    /// signal that would end python and has waited long enough ends the
    /// client, as it would have ended python.
    fn wait_a_while(&mut self, fds: &mut [PollFd<'_>], millis: u32) {
        self.note_waiting();
        let most = Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(millis) * 1_000_000,
        };
        let timeout = self.hold().map_or(most, |left| left.min(most));
        let _ = rustix::event::poll(fds, Some(&timeout));
        self.note_waiting();
        crate::reply::give_up_on_held_signal(self);
    }

    /// Once a held signal has waited [`HOLD_NS`] for a worker in vain: the
    /// signal the client is to end by, as python would have ended by it.
    pub fn held_too_long(&self) -> Option<u8> {
        let left = self.hold()?;
        if left.tv_sec > 0 || left.tv_nsec > 0 {
            return None;
        }
        let ending = (self.pending | self.waiting_in_kernel()) & ENDS_PROCESS;
        (ending != 0).then(|| ending.trailing_zeros() as u8 + 1)
    }

    /// The worker is known: deliver what arrived before it was.
    pub fn started(&mut self, worker: OwnedFd) {
        self.worker = Some(worker);
        let pending = core::mem::take(&mut self.pending);
        let for_group = core::mem::take(&mut self.pending_for_group);
        for number in 1..=64 {
            if pending & bit(number) != 0 {
                self.deliver(number, for_group & bit(number) != 0);
            }
        }
    }

    /// Reads the pending signals from the signalfd and forwards them, each
    /// after `local` has seen it and unless it returns true: it handled the
    /// signal for the client itself (pseudo-terminal mode takes SIGWINCH).
    pub fn receive(&mut self, mut local: impl FnMut(i32) -> bool) {
        // One `struct signalfd_siginfo` is 128 bytes: the number comes
        // first, then errno, the code and the sender's pid, 4 bytes each.
        let mut info = [0u8; 128];
        let field = |info: &[u8; 128], at: usize| {
            i32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]])
        };
        while let Some(fd) = &self.signals {
            match rustix::io::read(fd, &mut info) {
                Ok(128) => {
                    let number = field(&info, 0);
                    if !local(number) {
                        let from_terminal = field(&info, 8) == SI_KERNEL;
                        let ends_the_job =
                            bit(number) & ENDS_THE_JOB != 0 && sent_by_the_job(field(&info, 12));
                        let to_group = from_terminal || ends_the_job || number == libc_sig::CONT;
                        self.deliver(number, to_group);
                    }
                }
                _ => return,
            }
        }
    }

    /// Ctrl-Z typed into the program's pseudo-terminal: stops the program
    /// and the client as a SIGTSTP from the user's terminal does, unless
    /// `ignored`: the program ignored SIGTSTP as the key reached its
    /// terminal (see [`Self::program_ignores_suspend`]).
    pub fn suspend(&mut self, ignored: bool) {
        self.deliver_as(libc_sig::TSTP, true, Some(ignored));
    }

    /// Whether the program ignores SIGTSTP, so that Ctrl-Z in its
    /// pseudo-terminal must not stop it. (One that handles it is stopped
    /// all the same, its handler wherever it has got to: a SIGTSTP the
    /// program sends itself from its handler is dropped by the kernel, its
    /// process group being orphaned, so the stop is the client's to make.)
    /// For a typed Ctrl-Z, ask just before passing the key on, when the
    /// line discipline decides: by the time the client looks afterwards,
    /// the program's handler may have run, and curses ignores SIGTSTP for
    /// a moment after its handler, while it redraws.
    pub fn program_ignores_suspend(&self) -> bool {
        let Some(pid) = self
            .worker
            .as_ref()
            .and_then(|worker| pid_of(worker.as_fd()))
        else {
            return false;
        };
        let pid = Decimal::of(pid);
        CBuf::<32>::join(&[b"/proc/", pid.as_bytes(), b"/status"])
            .and_then(|path| crate::proc_status::ignored_by(path.as_c_str()))
            .is_some_and(|ignored| ignored & STOP != 0)
    }

    /// Sends signal `number` to the worker, or to its whole process group.
    fn deliver(&mut self, number: i32, to_group: bool) {
        self.deliver_as(number, to_group, None);
    }

    /// [`Self::deliver`], where a stop signal known to be `ignored` by the
    /// program need not be looked up.
    fn deliver_as(&mut self, number: i32, to_group: bool, ignored: Option<bool>) {
        let Some(worker) = &self.worker else {
            self.note_held(bit(number));
            self.pending |= bit(number);
            if to_group {
                self.pending_for_group |= bit(number);
            }
            return;
        };
        if bit(number) & STOP != 0 {
            // The kernel drops the stop of a SIGTSTP to an orphaned process
            // group (under `setsid`, say), but runs a handler: python's
            // would go on, having run its handler if it has one, and so does
            // the run. The worker's group is orphaned too: sent there, the
            // signal does just that.
            if group_is_orphaned() {
                send(worker.as_fd(), number, to_group);
                return;
            }
            // A program that ignores SIGTSTP goes on, as under python; the
            // rest of its group gets the SIGTSTP, as from a terminal (a
            // child that handles it, as an editor does, runs its handler).
            if ignored.unwrap_or_else(|| self.program_ignores_suspend()) {
                send(worker.as_fd(), number, to_group);
                return;
            }
            // The worker is alone in its session, so the kernel discards a
            // SIGTSTP sent to it (its process group is orphaned); SIGSTOP
            // always stops. Then the client stops, as the terminal meant;
            // `fg` or `bg` sends SIGCONT to the client, which forwards it.
            // A terminal the client made raw is itself while the job is
            // stopped, and raw again after.
            send(worker.as_fd(), libc_sig::STOP, to_group);
            crate::terminal::while_stopped(stop_by_tstp);
            return;
        }
        send(worker.as_fd(), number, to_group);
    }
}

/// Stops this process by SIGTSTP, as the terminal's Ctrl-Z stops python,
/// so that the shell says "Stopped" and `$?` is 148 (by SIGSTOP it said
/// "Stopped (signal)" and 147). Blocked for the signalfd, the signal is
/// raised, then let through until SIGCONT has continued the process. Its
/// group is not orphaned (the caller has seen to that), where the kernel
/// would drop it.
fn stop_by_tstp() {
    let _ = syscall::raise(libc_sig::TSTP);
    let _ = syscall::unblock(STOP);
    let _ = syscall::block(STOP);
}

/// Sends signal `number` to the worker, or to its process group (by number
/// before Linux 6.9, see the top of this file).
fn send(worker: BorrowedFd<'_>, number: i32, to_group: bool) {
    if to_group {
        match syscall::pidfd_send_signal(worker, number, true) {
            Ok(()) => return,
            Err(rustix::io::Errno::INVAL) => {
                if pid_of(worker).is_some_and(|pid| syscall::kill_group(pid, number).is_ok()) {
                    return;
                }
            }
            Err(_) => {}
        }
    }
    let _ = syscall::pidfd_send_signal(worker, number, false);
}

/// The pid of the process behind `pidfd` (the `Pid:` line of the pidfd's
/// `fdinfo`); `None` when that cannot be read, when `/proc` numbers
/// processes otherwise than this process does, or when the process is in no
/// pid namespace this one sees (the line says 0) or has been reaped (-1).
/// The number is the process's own until it is reaped: a zombie keeps it.
fn pid_of(pidfd: BorrowedFd<'_>) -> Option<u32> {
    if !proc_is_ours() {
        return None;
    }
    let fd = Decimal::of(pidfd.as_raw_fd() as u32);
    let path = CBuf::<32>::join(&[b"/proc/self/fdinfo/", fd.as_bytes()])?;
    // A pidfd's fdinfo is six short lines.
    let mut info = [0u8; 512];
    let info = read_file(path.as_c_str(), &mut info).ok()?;
    let line = info
        .split(|&byte| byte == b'\n')
        .find_map(|line| line.strip_prefix(b"Pid:"))?;
    decimal(line.trim_ascii()).filter(|&pid| pid > 0)
}

/// Whether `/proc` numbers processes as this process does; it does not
/// when it was mounted for another pid namespace (`unshare -p` without
/// `--mount-proc`, a container given the host's `/proc`).
fn proc_is_ours() -> bool {
    let pid = Decimal::of(rustix::process::getpid().as_raw_nonzero().get() as u32);
    let mut link = [0u8; 16];
    matches!(
        rustix::fs::readlinkat_raw(rustix::fs::CWD, c"/proc/self", &mut link[..]),
        Ok(len) if link.get(..len) == Some(pid.as_bytes())
    )
}

/// Whether the process `sender` (a signal's `ssi_pid`) is one that sends a
/// signal to the whole job (see [`ENDS_THE_JOB`]): the client's parent, a
/// process of the client's process group (`timeout`), or the leader of the
/// client's session, the interactive shell whose job the client may be
/// deeper in (`kill %1` of a script that runs it).
fn sent_by_the_job(sender: i32) -> bool {
    use rustix::process::{getpgid, getpgrp, getppid, getsid};
    let Some(sender) = rustix::process::Pid::from_raw(sender) else {
        return false;
    };
    getppid() == Some(sender)
        || getpgid(Some(sender)).ok() == Some(getpgrp())
        || getsid(None).ok() == Some(sender)
}

/// Whether this client's process group is orphaned, as the kernel judges
/// it: none of its living members has a parent in another group of the same
/// session (which could continue it once stopped). The client's own parent
/// answers the usual case (a shell's job); otherwise every process is
/// looked at. Where that cannot be known (no `/proc` of this pid namespace,
/// a group or session outside it, processes `/proc` does not show), not.
fn group_is_orphaned() -> bool {
    if !proc_is_ours() {
        return false;
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    let Seen::Is(me) = stat_of(pid) else {
        return false;
    };
    if me.group <= 0 || me.session <= 0 {
        return false; // they lie outside this pid namespace
    }
    // Whether a member's `parent` holds the group; `None` when unknown (a
    // parent outside this pid namespace shows as 0).
    let holds = |parent: i32| match stat_of(parent) {
        _ if parent <= 0 => None,
        Seen::Is(p) => Some(p.group != me.group && p.session == me.session),
        Seen::Gone => Some(false),
        Seen::Hidden => None,
    };
    if holds(me.parent) != Some(false) {
        return false;
    }
    let mut orphaned = true;
    let listed = crate::request::each_number_in(c"/proc", |pid| {
        if !orphaned {
            return;
        }
        match i32::try_from(pid).map_or(Seen::Gone, stat_of) {
            // A zombie does not count, as for the kernel.
            Seen::Is(m) if m.group == me.group && !matches!(m.state, b'Z' | b'X') => {
                orphaned = holds(m.parent) == Some(false);
            }
            Seen::Hidden => orphaned = false,
            _ => {}
        }
    });
    listed.is_some() && orphaned
}

/// What `/proc/PID/stat` says of a process.
struct Stat {
    state: u8,
    parent: i32,
    group: i32,
    session: i32,
}

enum Seen {
    Is(Stat),
    /// Gone, or never there.
    Gone,
    /// There, but `/proc` does not let this user see it (`hidepid`).
    Hidden,
}

fn stat_of(pid: i32) -> Seen {
    let Some(path) = u32::try_from(pid)
        .ok()
        .filter(|&pid| pid > 0)
        .and_then(|pid| CBuf::<32>::join(&[b"/proc/", Decimal::of(pid).as_bytes(), b"/stat"]))
    else {
        return Seen::Gone;
    };
    let mut buf = [0u8; 512];
    let stat = match read_file(path.as_c_str(), &mut buf) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => return Seen::Hidden,
        Err(_) => return Seen::Gone,
    };
    // After the command name, which may hold anything: state ppid pgrp session.
    let parsed = (|| {
        let after = stat.iter().rposition(|&b| b == b')')?;
        let mut fields = stat[after + 1..]
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty());
        let state = *fields.next()?.first()?;
        let mut next = || decimal(fields.next()?).and_then(|n| i32::try_from(n).ok());
        Some(Stat {
            state,
            parent: next()?,
            group: next()?,
            session: next()?,
        })
    })();
    parsed.map_or(Seen::Gone, Seen::Is)
}

/// Unblocks every signal the client may have blocked, before it becomes
/// another program.
pub fn release_all() {
    let _ = syscall::unblock(FORWARDED | STOP);
}

/// Lets `number` reach the client again, before the client raises it on
/// itself to end the way the program ended.
pub fn release(number: i32) {
    let _ = syscall::unblock(bit(number));
}
