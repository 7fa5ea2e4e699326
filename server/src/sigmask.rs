//! Holding signals off while the server forks.
//!
//! A signal that arrives during a fork would be handled in the wrong place:
//! in a worker's fork, by Python code that `os.register_at_fork` hooks run,
//! where an exception the server's stop handler raises is only reported and
//! dropped (the server then served on after SIGTERM); in a fresh server's
//! child before it execs, by the server's handlers, and then forgotten by
//! exec. Blocked, it waits until the fork is done and the process it reached
//! can act on it.

/// Every signal that can be blocked stays pending until this is dropped,
/// which puts the mask back as it was.
pub struct Blocked {
    previous: libc::sigset_t,
}

impl Blocked {
    /// Blocks every signal that can be blocked.
    pub fn all() -> Blocked {
        // SAFETY: sigset_t is plain data that sigfillset and sigprocmask
        // fill in; both only touch the sets passed.
        unsafe {
            let mut all = std::mem::zeroed::<libc::sigset_t>();
            let mut previous = std::mem::zeroed::<libc::sigset_t>();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_BLOCK, &all, &mut previous);
            Blocked { previous }
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: sigprocmask reads the set passed and writes nothing else.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// Sets every signal this process catches back to its default action, as
/// exec will; ignored ones stay ignored (`nohup`), as exec leaves them. For
/// a child about to exec, while signals are [`Blocked`].
pub fn default_caught_signals() {
    for signal in 1..=libc::SIGRTMAX() {
        // SAFETY: querying and setting dispositions runs no code; the
        // sigaction structure is plain data.
        unsafe {
            let mut current = std::mem::zeroed::<libc::sigaction>();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction != libc::SIG_IGN
                && current.sa_sigaction != libc::SIG_DFL
            {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    }
}
