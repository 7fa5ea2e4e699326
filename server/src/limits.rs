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

/// Gives this process the limits, priority and affinity of process
/// `client`; what fails is left as it was.
pub fn adopt(client: pid_t) {
    if client <= 0 {
        return;
    }
    for resource in RESOURCES {
        adopt_limit(client, resource);
    }
    adopt_priority(client);
    adopt_affinity(client);
}

fn adopt_limit(client: pid_t, resource: c_int) {
    let (Some(theirs), Some(ours)) = (limit(client, resource), limit(0, resource)) else {
        return;
    };
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

fn adopt_priority(client: pid_t) {
    // getpriority returns the nice value, -1 included, so errno tells a
    // failure apart.
    // SAFETY: plain system calls on process ids; errno is this thread's.
    unsafe {
        *libc::__errno_location() = 0;
        let theirs = libc::getpriority(libc::PRIO_PROCESS, client as libc::id_t);
        if *libc::__errno_location() != 0 {
            return;
        }
        if libc::getpriority(libc::PRIO_PROCESS, 0) != theirs {
            libc::setpriority(libc::PRIO_PROCESS, 0, theirs);
        }
    }
}

fn adopt_affinity(client: pid_t) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let (mut theirs, mut ours): (libc::cpu_set_t, libc::cpu_set_t) = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the sets are valid for `size` bytes.
    unsafe {
        if libc::sched_getaffinity(client, size, &mut theirs) != 0
            || libc::sched_getaffinity(0, size, &mut ours) != 0
        {
            return;
        }
        if !cpu_sets_equal(&theirs, &ours) {
            libc::sched_setaffinity(0, size, &theirs);
        }
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
