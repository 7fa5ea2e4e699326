//! `PyErr_WriteUnraisable`, for the worker's flush of `sys.stdout` at exit.
//!
//! CPython calls it from C once the program is over, with no Python frame
//! running. Called under a frame, it puts that frame into the traceback of
//! an error that has none of its own (one raised in C, such as the
//! `BrokenPipeError` of a stdout nobody reads), and the report would show a
//! line of warmfork's code that python's does not have. So the call is made
//! on a thread of its own, where no frame runs, and waited for: no thread
//! is left behind, and the report comes out where python's does.

use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;

/// Reports `error` as an error that could not be raised, in `object`, as
/// CPython reports a failed flush of `sys.stdout` at exit: through
/// `sys.unraisablehook`, by default "Exception ignored in: ..." on stderr.
#[pyfunction]
pub fn write_unraisable(
    py: Python<'_>,
    error: Bound<'_, PyBaseException>,
    object: Bound<'_, PyAny>,
) {
    let (error, object) = (error.unbind(), object.unbind());
    py.detach(|| {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                Python::attach(|py| {
                    PyErr::from_value(error.into_bound(py).into_any()).restore(py);
                    // SAFETY: the GIL is held and an exception is set, as the
                    // call requires; it takes the exception and clears it.
                    unsafe { pyo3::ffi::PyErr_WriteUnraisable(object.as_ptr()) };
                });
            });
        });
    });
}
