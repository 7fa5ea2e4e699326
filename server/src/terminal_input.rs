//! `input()` while standard input is the client's terminal.
//!
//! A worker has no controlling terminal, so the kernel never stops it for
//! reading the client's terminal from the background; `_stdio.TerminalReader`
//! does what the kernel would. `input()` reads the terminal from C, past
//! `sys.stdin`, so the builtin is replaced by this one, which asks the reader
//! to begin and end a read around the original. It is a builtin of its own
//! rather than a Python wrapper so that no frame of warmfork's sits in a
//! traceback that goes through `input()` (Ctrl-C, Ctrl-D at a prompt), and
//! so that it takes arguments exactly as the original does.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// The reader to ask and the builtin `input` it guards.
static GUARD: Mutex<Option<(Py<PyAny>, Py<PyAny>)>> = Mutex::new(None);

/// Makes [`input`] guard `original` with `reader` (a `TerminalReader`).
#[pyfunction]
pub fn guard_input(reader: Py<PyAny>, original: Py<PyAny>) {
    *GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((reader, original));
}

/// Reads a line from the terminal as the builtin `input` does, once the
/// client's job is in the terminal's foreground.
#[pyfunction(signature = (*args, **kwargs))]
pub fn input(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let guard = GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|(reader, original)| (reader.clone_ref(py), original.clone_ref(py)));
    let Some((reader, original)) = guard else {
        let builtin = py.import("builtins")?.getattr("input")?;
        return Ok(builtin.call(args, kwargs)?.unbind());
    };
    let reader = reader.bind(py);
    let before = reader.call_method0("begin_read")?;
    let line = original.bind(py).call(args, kwargs);
    reader.call_method1("end_read", (before,))?;
    Ok(line?.unbind())
}
