//! `PyErr_WriteUnraisable`, for the worker's flush of `sys.stdout` at exit.
//!
//! CPython calls it from C once the program is over, with no Python frame
//! running. Called under a frame, it puts that frame into the traceback of
//! an error that has none of its own (one raised in C, such as the
//! `BrokenPipeError` of a stdout nobody reads), and the report would show a
//! line of warmfork's code that python's does not have. So the call is made
//! on a thread of its own, where no frame runs, and waited for: no thread
//! is left behind, and the report comes out where python's does. (A
//! `sys.unraisablehook` of the program's runs on that thread, so
//! `threading.current_thread()` there is not the main thread.)

use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;

/// Reports `error` as an error that could not be raised, in `object`, as
/// CPython reports a failed flush of `sys.stdout` at exit: through
/// `sys.unraisablehook`, by default "Exception ignored in: ..." on stderr.
#[pyfunction]
pub fn write_unraisable(py: Python<'_>, error: Py<PyBaseException>, object: Py<PyAny>) {
    let report = || Python::attach(|py| write(py, &error, &object));
    let spawned = py.detach(|| {
        std::thread::scope(|scope| {
            // The scope joins the thread before it returns.
            std::thread::Builder::new()
                .spawn_scoped(scope, report)
                .map(drop)
        })
    });
    if spawned.is_err() {
        // No thread to be had (a process limit): a report that names a line
        // of warmfork's is better than none.
        write(py, &error, &object);
    }
}

fn write(py: Python<'_>, error: &Py<PyBaseException>, object: &Py<PyAny>) {
    PyErr::from_value(error.bind(py).clone().into_any()).restore(py);
    // SAFETY: the GIL is held and an exception is set, as the call requires;
    // it takes the exception and clears it.
    unsafe { pyo3::ffi::PyErr_WriteUnraisable(object.as_ptr()) };
}
