//! What a process inherits from its parent besides descriptors and the
//! environment: resource limits, the scheduling priority (nice value), the
//! scheduling policy, the I/O priority and the CPU affinity. Under python
//! they are the shell's, as `ulimit`, `nice`, `chrt`, `ionice` and
//! `taskset` set them; a worker forked from the server would have the
//! server's. So the worker takes the client's, read from the client process
//! itself (same user: `prlimit`, `getpriority`, `sched_getscheduler`,
//! `ioprio_get` and `sched_getaffinity` of another process need no
//! privilege then).
//!
//! What the worker cannot take it keeps: a limit above the server's hard
//! limit (raising a hard limit needs privilege), a priority above the
//! server's, a real-time policy or I/O class, any policy but `SCHED_IDLE`
//! for a server started under it. Memory limits count the warm
//! memory the worker shares with the server, which a fresh python would not
//! have.

use libc::{c_int, pid_t, rlimit};

/// The server's descriptor limit as it was started with, once
/// [`raise_descriptor_limit`] has raised it.
static STARTED_WITH_NOFILE: std::sync::OnceLock<rlimit> = std::sync::OnceLock::new();

/// The most descriptors the server asks for.
const SERVER_NOFILE: libc::rlim_t = 65536;

/// Raises the server's soft limit on open descriptors to its hard limit (at
/// most [`SERVER_NOFILE`]). A waiting client's request holds up to 253 of
/// them until a worker takes it, so under the usual soft limit of 1024 four
/// clients at once could make everyone else wait for theirs. The programs
/// are not concerned: a worker takes the client's limits, or, when it
/// cannot read them, goes back to those the server was started with
/// ([`restore_descriptor_limit`]), as does a fresh server replacing this
/// one.
pub fn raise_descriptor_limit() {
    let Some(started) = limit(0, libc::RLIMIT_NOFILE as c_int) else {
        return;
    };
    let raised = rlimit {
        rlim_cur: started.rlim_max.min(SERVER_NOFILE),
        rlim_max: started.rlim_max,
    };
    if raised.rlim_cur > started.rlim_cur && set_limit(libc::RLIMIT_NOFILE as c_int, raised) {
        let _ = STARTED_WITH_NOFILE.set(started);
    }
}

/// In a child about to exec a fresh server, or a worker that cannot read
/// its client's limit: the descriptor limit the server was started with.
pub fn restore_descriptor_limit() {
    if let Some(started) = STARTED_WITH_NOFILE.get() {
        set_limit(libc::RLIMIT_NOFILE as c_int, *started);
    }
}

/// This process's soft limit on open descriptors, for messages.
pub fn descriptor_limit() -> String {
    limit(0, libc::RLIMIT_NOFILE as c_int)
        .map_or_else(|| "unknown".into(), |l| l.rlim_cur.to_string())
}

/// Every resource `getrlimit` knows (`RLIMIT_CPU` .. `RLIMIT_RTTIME`).
const RESOURCES: std::ops::Range<c_int> = 0..16;

/// This process's own limits, priority and affinity, read while a worker
/// is idle so that a run only reads the client's.
#[derive(Debug)]
pub struct Own {
    limits: [Option<rlimit>; RESOURCES.end as usize],
    priority: Option<c_int>,
    policy: Option<Policy>,
    io_priority: Option<c_int>,
    affinity: Option<libc::cpu_set_t>,
}

impl Own {
    pub fn read() -> Own {
        Own {
            limits: std::array::from_fn(|resource| limit(0, resource as c_int)),
            priority: priority(0),
            policy: policy(0),
            io_priority: io_priority(0),
            affinity: affinity(0),
        }
    }
}

/// Gives this process (whose own settings are `own`) the limits, priority
/// and affinity of process `client`; what fails is left as it was.
pub fn adopt(client: pid_t, own: &Own) {
    if client <= 0 {
        return;
    }
    for (resource, ours) in RESOURCES.zip(&own.limits) {
        if resource == NOFILE {
            continue; // see `adopt_descriptor_limit`
        }
        if let (Some(theirs), Some(ours)) = (limit(client, resource), ours) {
            adopt_limit(resource, theirs, *ours);
        }
    }
    if let Some(theirs) = priority(client).filter(|theirs| Some(*theirs) != own.priority) {
        // SAFETY: a plain system call on this process.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, theirs) };
    }
    if let Some(theirs) = policy(client).filter(|theirs| Some(*theirs) != own.policy) {
        let param = libc::sched_param {
            sched_priority: theirs.priority,
        };
        // SAFETY: a plain system call on this process; `param` is valid.
        unsafe { libc::sched_setscheduler(0, theirs.policy, &param) };
    }
    if let Some(theirs) = io_priority(client).filter(|theirs| Some(*theirs) != own.io_priority) {
        // SAFETY: a plain system call on this process.
        unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, theirs) };
    }
    if let (Some(theirs), Some(ours)) = (affinity(client), &own.affinity) {
        if !cpu_sets_equal(&theirs, ours) {
            // SAFETY: the set is valid for its size.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &theirs) };
        }
    }
}

/// Makes room for the client's descriptors before they are installed: a
/// soft limit as high as the client's, where this worker's hard limit
/// allows (a number at or above the soft limit cannot be installed).
/// Returns the client's descriptor limit, for [`adopt_descriptor_limit`].
pub fn room_for_descriptors(client: pid_t, own: &Own) -> Option<rlimit> {
    let theirs = limit(client, NOFILE).filter(|_| client > 0)?;
    if let Some(ours) = own.limits[NOFILE as usize] {
        if theirs.rlim_cur > ours.rlim_cur {
            set_limit(
                NOFILE,
                rlimit {
                    rlim_cur: theirs.rlim_cur.min(ours.rlim_max),
                    rlim_max: ours.rlim_max,
                },
            );
        }
    }
    Some(theirs)
}

/// Takes the client's descriptor limit `theirs` (from
/// [`room_for_descriptors`]), once its descriptors are in place: a
/// descriptor a process has may lie above its soft limit (`exec 9<f;
/// ulimit -n 8; python` still reads 9), but none can be put there.
pub fn adopt_descriptor_limit(theirs: Option<rlimit>, own: &Own) {
    match (theirs, &own.limits[NOFILE as usize]) {
        (Some(theirs), Some(ours)) => adopt_limit(NOFILE, theirs, *ours),
        _ => restore_descriptor_limit(),
    }
}

const NOFILE: c_int = libc::RLIMIT_NOFILE as c_int;

fn adopt_limit(resource: c_int, theirs: rlimit, ours: rlimit) {
    if (theirs.rlim_cur, theirs.rlim_max) == (ours.rlim_cur, ours.rlim_max) {
        return;
    }
    if set_limit(resource, theirs) {
        return;
    }
    // A hard limit above ours cannot be had: keep ours, and the soft limit
    // as close to theirs as it allows.
    set_limit(
        resource,
        rlimit {
            rlim_cur: theirs.rlim_cur.min(ours.rlim_max),
            rlim_max: ours.rlim_max,
        },
    );
}

/// The limit on `resource` of process `pid` (0: this one).
fn limit(pid: pid_t, resource: c_int) -> Option<rlimit> {
    let mut value = rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads only; `value` is a valid rlimit to write to.
    let ok = unsafe { libc::prlimit(pid, resource as _, std::ptr::null(), &mut value) } == 0;
    ok.then_some(value)
}

fn set_limit(resource: c_int, value: rlimit) -> bool {
    // SAFETY: `value` is a valid rlimit to read; nothing is written back.
    unsafe { libc::prlimit(0, resource as _, &value, std::ptr::null_mut()) == 0 }
}

/// The nice value of process `pid` (0: this one). getpriority returns it,
/// -1 included, so errno tells a failure apart.
fn priority(pid: pid_t) -> Option<c_int> {
    // SAFETY: a plain system call; errno is this thread's.
    unsafe {
        *libc::__errno_location() = 0;
        let value = libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t);
        (*libc::__errno_location() == 0).then_some(value)
    }
}

/// A scheduling policy (with `SCHED_RESET_ON_FORK` where set) and its
/// static priority, which only the real-time policies have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policy {
    policy: c_int,
    priority: c_int,
}

/// The scheduling policy of process `pid` (0: this one).
fn policy(pid: pid_t) -> Option<Policy> {
    // SAFETY: a plain system call that only reads.
    let policy = unsafe { libc::sched_getscheduler(pid) };
    if policy < 0 {
        return None;
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    let real_time = matches!(
        policy & !libc::SCHED_RESET_ON_FORK,
        libc::SCHED_FIFO | libc::SCHED_RR
    );
    // SAFETY: a plain system call; `param` is valid to write to.
    if real_time && unsafe { libc::sched_getparam(pid, &mut param) } != 0 {
        return None;
    }
    Some(Policy {
        policy,
        priority: param.sched_priority,
    })
}

/// `ioprio_get`'s and `ioprio_set`'s selector of a single process.
const IOPRIO_WHO_PROCESS: c_int = 1;

/// The I/O priority (class and level) of process `pid` (0: this one).
fn io_priority(pid: pid_t) -> Option<c_int> {
    // SAFETY: a plain system call that only reads.
    let value = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid) };
    c_int::try_from(value).ok().filter(|value| *value >= 0)
}

/// The CPU affinity of process `pid` (0: this one).
fn affinity(pid: pid_t) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data, zeroed a valid empty set, and valid
    // for the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn cpu_sets_equal(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    // SAFETY: cpu_set_t is plain data, viewed as its bytes.
    let bytes = |set: &libc::cpu_set_t| unsafe {
        std::slice::from_raw_parts(
            (set as *const libc::cpu_set_t).cast::<u8>(),
            std::mem::size_of::<libc::cpu_set_t>(),
        )
    };
    bytes(a) == bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_one_and_restored() {
        let nofile = libc::RLIMIT_NOFILE as c_int;
        let hard = limit(0, nofile).expect("the descriptor limit").rlim_max;
        assert!(hard > 100, "the test needs a hard limit above 100");
        // In a child: the limits and the record of them are per process.
        // SAFETY: the child makes only system calls (and sets a OnceLock no
        // other thread of its own can hold), then `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let low = rlimit {
                rlim_cur: 100,
                rlim_max: hard,
            };
            let soft = || limit(0, nofile).map(|l| l.rlim_cur);
            let raised = set_limit(nofile, low) && {
                raise_descriptor_limit();
                soft() == Some(hard.min(SERVER_NOFILE))
            };
            restore_descriptor_limit();
            let restored = soft() == Some(100);
            // SAFETY: ends the child without running the test harness's code.
            unsafe { libc::_exit(i32::from(raised) + 2 * i32::from(restored)) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(libc::WIFEXITED(status));
        let code = libc::WEXITSTATUS(status);
        assert!(code & 1 != 0, "not raised to the hard limit");
        assert!(code & 2 != 0, "not restored to 100");
    }
}
