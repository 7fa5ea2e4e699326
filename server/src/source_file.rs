//! Running a program's source file as python runs it: through CPython's
//! own file parser.
//!
//! `python FILE` and `python - < FILE` hand an open `FILE *` to the parser's
//! file mode, which reads the source a line at a time as bytes: it honours a
//! coding cookie or a byte-order mark, and stops at the first line holding
//! a null byte or bytes that are not UTF-8 (comments included), with
//! messages and locations of its own ("source code cannot contain null
//! bytes", "encoding problem: utf-16"). `compile()` of the same bytes is
//! the string parser: it words those errors differently, places them
//! elsewhere, and lets invalid UTF-8 in a comment pass. So the handler runs
//! files through the door python uses, `PyRun_FileExFlags`, which is public
//! API.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Parses the source file open at `fd` and runs it with `namespace` as its
/// globals, as python runs a script named `filename`. Takes `fd` over: it
/// is closed once the file is parsed, before the code runs, as python
/// closes its script. With `skip_first_line` (`-x`) parsing starts at the
/// first line's newline, so line numbers hold.
#[pyfunction]
pub fn run_source_file(
    py: Python<'_>,
    fd: RawFd,
    filename: &[u8],
    namespace: &Bound<'_, PyDict>,
    skip_first_line: bool,
) -> PyResult<()> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("not a descriptor: {fd}")));
    }
    // SAFETY: the caller gives this function `fd`, open and no longer used
    // by anyone else; from here it is closed once, by this `OwnedFd` or by
    // the `FILE` it is handed to.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(filename)
        .map_err(|_| PyValueError::new_err("a file name with a null byte"))?;
    // SAFETY: `fd` is an open descriptor and the mode a C string.
    let file = unsafe { libc::fdopen(fd.as_raw_fd(), c"rb".as_ptr()) };
    if file.is_null() {
        return Err(std::io::Error::last_os_error().into()); // `fd` closes as it drops
    }
    let _ = fd.into_raw_fd(); // the `FILE` owns it now
    if skip_first_line {
        skip_to_first_newline(file);
    }
    // What `pymain_run_file` passes (`_PyCompilerFlags_INIT`): no flags, so
    // the file is compiled on its own, with no `__future__` of warmfork's.
    let mut flags = ffi::PyCompilerFlags {
        cf_flags: 0,
        cf_feature_version: libc::c_int::from(py.version_info().minor),
    };
    // SAFETY: the GIL is held (`py`); `file` is open and, with `closeit` 1,
    // closed by the call once it has parsed (only a failure to allocate
    // before parsing would leave it open); `name` is a C string and
    // `namespace` a dict, both alive for the whole call.
    let result = unsafe {
        ffi::PyRun_FileExFlags(
            file,
            name.as_ptr(),
            ffi::Py_file_input,
            namespace.as_ptr(),
            namespace.as_ptr(),
            1,
            &mut flags,
        )
    };
    // SAFETY: `PyRun_FileExFlags` returns a new reference, or NULL with an
    // exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, result) }.map(drop)
}

/// `-x` as `pymain_run_file_obj` does it: read up to the first newline and
/// push that newline back.
fn skip_to_first_newline(file: *mut libc::FILE) {
    loop {
        // SAFETY: `file` is an open `FILE`, used by this thread alone.
        let byte = unsafe { libc::fgetc(file) };
        if byte == libc::EOF {
            return;
        }
        if byte == libc::c_int::from(b'\n') {
            // SAFETY: as above; one byte of push-back is always possible.
            unsafe { libc::ungetc(byte, file) };
            return;
        }
    }
}
