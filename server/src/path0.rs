//! Where a run's program was started from, as CPython 3.13 remembers it.
//!
//! From 3.13 on, an `AttributeError` on a module the program's own
//! directory shadows ("module 'random' has no attribute 'randint'") adds
//! "consider renaming '.../random.py' since it has the same name as the
//! standard library module". CPython decides that by comparing the module's
//! directory with `config.sys_path_0`, the entry `pymain_run_python` put in
//! front of `sys.path` for the program (the script's directory; '' for
//! `-c`, meaning the working directory), not with `sys.path` itself. A
//! worker's is the server's; [`set_sys_path_0`] gives it the run's.
//!
//! `PyConfig` is a public structure, laid out as pyo3 declares it for the
//! version built for, but `sys_path_0` is one of its private fields: the
//! layout is proved once, before it is written, by the path fields in
//! front of it, which must hold what `sys` says.

use pyo3::prelude::*;
use pyo3::types::PyString;

/// Makes `path` (None: no entry, as under `-P`) the run's `sys.path[0]` as
/// CPython's import errors see it. Returns False where this interpreter has
/// no such field (before 3.13) or its layout could not be proved.
#[pyfunction]
#[pyo3(signature = (path))]
pub fn set_sys_path_0(py: Python<'_>, path: Option<&Bound<'_, PyString>>) -> PyResult<bool> {
    imp::set(py, path)
}

/// Proves the layout now, in the server, so that workers share the answer.
pub fn prove(py: Python<'_>) {
    imp::prove(py);
}

#[cfg(all(Py_3_13, not(Py_LIMITED_API)))]
mod imp {
    use std::ffi::c_void;
    use std::sync::OnceLock;

    use libc::wchar_t;
    use pyo3::ffi::{self, PyConfig};
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    unsafe extern "C" {
        /// The running interpreter's configuration (`pycore_pystate.h`,
        /// exported by libpython).
        fn _Py_GetConfig() -> *const PyConfig;
    }

    /// Whether `PyConfig` is laid out as pyo3 says, found out once (in the
    /// server, before it forks).
    static PROVED: OnceLock<bool> = OnceLock::new();

    pub fn prove(py: Python<'_>) -> bool {
        *PROVED.get_or_init(|| proved(py).unwrap_or(false))
    }

    pub fn set(py: Python<'_>, path: Option<&Bound<'_, PyString>>) -> PyResult<bool> {
        if !prove(py) {
            return Ok(false);
        }
        let wide = match path {
            Some(path) => wide_copy(path)?,
            None => std::ptr::null_mut(),
        };
        // SAFETY: the interpreter's own configuration, whose layout is
        // proved; the GIL is held. The old string is left as it is (a worker
        // never frees its configuration), so nothing that read it dangles.
        unsafe { (*_Py_GetConfig().cast_mut()).sys_path_0 = wide };
        Ok(true)
    }

    /// Whether the path fields just in front of `sys_path_0` hold what
    /// `sys` says they do.
    fn proved(py: Python<'_>) -> PyResult<bool> {
        let sys = py.import("sys")?;
        // SAFETY: with the GIL held, the configuration lives as long as the
        // interpreter.
        let config = unsafe { &*_Py_GetConfig() };
        // `site` makes `sys.prefix` a virtual environment's, after the
        // configuration had the installation's.
        let fields = [
            (config.executable, ["executable", "executable"]),
            (
                config.base_executable,
                ["_base_executable", "_base_executable"],
            ),
            (config.prefix, ["prefix", "base_prefix"]),
            (config.base_prefix, ["base_prefix", "base_prefix"]),
            (config.exec_prefix, ["exec_prefix", "base_exec_prefix"]),
            (
                config.base_exec_prefix,
                ["base_exec_prefix", "base_exec_prefix"],
            ),
        ];
        for (field, names) in fields {
            if field.is_null() {
                return Ok(false);
            }
            let value = read(py, field)?;
            let mut matched = false;
            for name in names {
                matched |= value.eq(sys.getattr(name)?)?;
            }
            if !matched {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The NUL-terminated wide string at `field`, as a Python string.
    fn read<'py>(py: Python<'py>, field: *const wchar_t) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: a NUL-terminated string of the configuration (checked
        // non-null by the caller).
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_FromWideChar(field, -1)) }
    }

    /// `path` as a NUL-terminated wide string in memory of the raw allocator,
    /// as CPython makes the configuration's (lone surrogates of undecodable
    /// bytes kept, as `PyUnicode_AsWideCharString` keeps them).
    fn wide_copy(path: &Bound<'_, PyString>) -> PyResult<*mut wchar_t> {
        // SAFETY: asking for the length only (the NUL included).
        let len = unsafe { ffi::PyUnicode_AsWideChar(path.as_ptr(), std::ptr::null_mut(), 0) };
        let Ok(len) = usize::try_from(len) else {
            return Err(PyErr::fetch(path.py()));
        };
        // SAFETY: allocating `len` wide characters from the raw allocator.
        let buffer = unsafe { ffi::PyMem_RawMalloc(len * size_of::<wchar_t>()) }.cast::<wchar_t>();
        if buffer.is_null() {
            return Err(pyo3::exceptions::PyMemoryError::new_err(()));
        }
        // SAFETY: `buffer` holds `len` wide characters, the string's and its NUL.
        if unsafe { ffi::PyUnicode_AsWideChar(path.as_ptr(), buffer, len as ffi::Py_ssize_t) } < 0 {
            // SAFETY: freeing what was just allocated, unused.
            unsafe { ffi::PyMem_RawFree(buffer.cast::<c_void>()) };
            return Err(PyErr::fetch(path.py()));
        }
        Ok(buffer)
    }
}

#[cfg(not(all(Py_3_13, not(Py_LIMITED_API))))]
mod imp {
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    pub fn prove(_py: Python<'_>) -> bool {
        false
    }

    pub fn set(_py: Python<'_>, _path: Option<&Bound<'_, PyString>>) -> PyResult<bool> {
        Ok(false)
    }
}
