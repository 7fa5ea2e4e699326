//! Finding the modules a program loaded, without touching the server's.
//!
//! At exit a worker finalises the modules its program imported, as python
//! does (see `_worker._finalize_modules`). Picking them out of `sys.modules`
//! in Python would take a reference to every entry, writing the reference
//! count of each module name the server loaded and so copying the memory
//! pages those names sit on. Here the server notes the addresses of its
//! module names once, and a worker walks `sys.modules` with borrowed
//! references, comparing addresses: it reads the dictionary's table and
//! nothing else of the server's.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The keys of `sys.modules` when the server started serving, by address.
///
/// A key keeps its address while its entry exists. A name the program
/// removes can be freed and its address reused for the name of a module the
/// program adds; that module is then taken for the server's and not
/// finalised, the one way this errs, and only by doing too little.
#[pyclass(frozen, module = "warmfork._native")]
#[derive(Debug)]
pub struct ModuleNames {
    /// Sorted, for binary search.
    keys: Vec<usize>,
}

#[pymethods]
impl ModuleNames {
    #[new]
    fn new(modules: &Bound<'_, PyDict>) -> Self {
        let mut keys: Vec<usize> = entries(modules).map(|(key, _)| key as usize).collect();
        keys.sort_unstable();
        ModuleNames { keys }
    }

    /// The entries of `modules` whose keys are not among these, in the
    /// order they were added.
    fn added_to<'py>(
        &self,
        modules: &Bound<'py, PyDict>,
    ) -> Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = modules.py();
        entries(modules)
            .filter(|(key, _)| self.keys.binary_search(&(*key as usize)).is_err())
            // SAFETY: borrowed references from `entries`, still valid: the
            // dictionary has not changed since.
            .map(|(key, value)| unsafe {
                (
                    Bound::from_borrowed_ptr(py, key),
                    Bound::from_borrowed_ptr(py, value),
                )
            })
            .collect()
    }
}

/// The (key, value) pointers of `dict`, borrowed.
fn entries<'a>(
    dict: &'a Bound<'_, PyDict>,
) -> impl Iterator<Item = (*mut ffi::PyObject, *mut ffi::PyObject)> + 'a {
    let mut position: ffi::Py_ssize_t = 0;
    std::iter::from_fn(move || {
        let mut key = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: `PyDict_Next` only reads the dictionary, which `dict`
        // keeps alive and which nothing changes while the iterator is used
        // (no Python code runs: the callers compare addresses); the
        // pointers it hands out are borrowed.
        let more = unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key, &mut value) };
        (more != 0).then_some((key, value))
    })
}
