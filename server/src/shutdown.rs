//! What python refuses while it shuts down, from 3.12 on: a fork
//! (`os.fork`, `os.forkpty`) or a new thread. `Py_FinalizeEx` marks the
//! interpreter as finalising and those calls check the mark (3.12 from its
//! start, before the non-daemon threads are joined, with `RuntimeError`;
//! 3.13 once the `atexit` callbacks have run, with
//! `PythonFinalizationError`), so an `unraisablehook` reporting the failed
//! flush of `sys.stdout` at exit cannot fork.
//!
//! A worker finalises in Python and the mark is private to the interpreter.
//! So its finalisation, when python would set the mark, adds an audit hook
//! of C's ([`refuse_at_shutdown`]; it runs before the program's hooks and
//! adds no frame to a traceback) which fails the audit events of those
//! calls with python's error. Their audit comes just after python's check,
//! but for a thread's start, where it comes just before: an audit hook of
//! the program's does not see that one. The hook is added only then: with
//! any hook at all, CPython builds the arguments of every audit event,
//! which cost a worker some ten more pages per run. Adding it is itself an
//! audit event (`sys.addaudithook`) that a program's hooks see, and may
//! veto, at exit.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

type AuditHook = unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int;

unsafe extern "C" {
    fn PySys_AddAuditHook(hook: AuditHook, user_data: *mut c_void) -> c_int;
}

/// The exception the calls raise; null until [`refuse_at_shutdown`].
static REFUSAL: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// From now on, a fork or a new thread raises `error` (python's message).
/// Called once, by a worker's finalisation on Python 3.12 and later.
#[pyfunction]
pub fn refuse_at_shutdown(py: Python<'_>, error: &Bound<'_, PyType>) {
    // The process ends before the type could be freed: its reference is kept.
    let previous = REFUSAL.swap(error.clone().into_ptr(), Ordering::Relaxed);
    if !previous.is_null() {
        return;
    }
    // SAFETY: the hook is a plain function with the signature C expects;
    // the GIL is held.
    if unsafe { PySys_AddAuditHook(hook, std::ptr::null_mut()) } < 0 {
        // A hook of the program's refused it (with an error that is no
        // RuntimeError, which C itself drops): the program goes on as on
        // 3.11, and the error is not the finalisation's to report.
        drop(PyErr::take(py));
    }
}

unsafe extern "C" fn hook(
    event: *const c_char,
    _args: *mut ffi::PyObject,
    _data: *mut c_void,
) -> c_int {
    let error = REFUSAL.load(Ordering::Relaxed);
    if error.is_null() {
        return 0;
    }
    // SAFETY: C passes the event's name as a NUL-terminated string.
    let message = match unsafe { CStr::from_ptr(event) }.to_bytes() {
        b"os.fork" | b"os.forkpty" => c"can't fork at interpreter shutdown",
        b"_thread.start_new_thread" | b"_thread.start_joinable_thread" => {
            c"can't create new thread at interpreter shutdown"
        }
        _ => return 0,
    };
    // SAFETY: audit hooks run with the GIL held; `error` is an exception
    // type kept alive by `refuse_at_shutdown`.
    unsafe { ffi::PyErr_SetString(error, message.as_ptr()) };
    -1
}
