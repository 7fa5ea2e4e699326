//! What a process inherits from its parent besides descriptors and the
//! environment: resource limits, the scheduling priority (nice value) and
//! the CPU affinity. Under python they are the shell's, as `ulimit`, `nice`
//! and `taskset` set them; a worker forked from the server would have the
//! server's. So the worker takes the client's, read from the client process
//! itself (same user: `prlimit`, `getpriority` and `sched_getaffinity` of
//! another process need no privilege then).
//!
//! What the worker cannot take it keeps: a limit above the server's hard
//! limit (raising a hard limit needs privilege), a priority above the
//! server's. Memory limits count the warm memory the worker shares with the
//! server, which a fresh python would not have.

use libc::{c_int, pid_t, rlimit};

/// Every resource `getrlimit` knows (`RLIMIT_CPU` .. `RLIMIT_RTTIME`).
const RESOURCES: std::ops::Range<c_int> = 0..16;

/// This process's own limits, priority and affinity, read while a worker
/// is idle so that a run only reads the client's.
#[derive(Debug)]
pub struct Own {
    limits: [Option<rlimit>; RESOURCES.end as usize],
    priority: Option<c_int>,
    affinity: Option<libc::cpu_set_t>,
}

impl Own {
    pub fn read() -> Own {
        Own {
            limits: std::array::from_fn(|resource| limit(0, resource as c_int)),
            priority: priority(0),
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
        if let (Some(theirs), Some(ours)) = (limit(client, resource), ours) {
            adopt_limit(resource, theirs, *ours);
        }
    }
    if let Some(theirs) = priority(client).filter(|theirs| Some(*theirs) != own.priority) {
        // SAFETY: a plain system call on this process.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, theirs) };
    }
    if let (Some(theirs), Some(ours)) = (affinity(client), &own.affinity) {
        if !cpu_sets_equal(&theirs, ours) {
            // SAFETY: the set is valid for its size.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &theirs) };
        }
    }
}

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
