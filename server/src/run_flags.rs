//! How a run's interpreter says it started: its UTF-8 mode and `sys.flags`.
//!
//! `sys.flags` is a struct sequence Python code cannot build, so the
//! worker's copy, showing the options the run took, is built here
//! ([`set_flags`]).
//!
//! python decides at start-up whether it is in UTF-8 mode (PEP 540: `-X
//! utf8`, else `PYTHONUTF8`, else on in the C or POSIX locale) and keeps the
//! answer in two places: `_PyRuntime.preconfig.utf8_mode`, which C code reads
//! (the default encoding of `open()` and `io.text_encoding`, the locale
//! codecs), and `sys.flags.utf8_mode`, which Python code reads
//! (`locale.getpreferredencoding`). A worker inherits the server's answer,
//! but a run in another locale (`LC_ALL=C` under cron, in a container) must
//! get the one python would give it, or its files are ASCII.
//!
//! CPython offers no way to change it, and `_PyRuntime`'s layout is private
//! and differs between versions. So the server finds the field once, by the
//! values `PyPreConfig` must hold in this interpreter, and proves the find
//! before trusting it: with the field flipped, `io.text_encoding(None)` must
//! change its answer (an int elsewhere that happened to hold the same values
//! is flipped only for that call, with signals held). Where either fails,
//! runs keep the server's mode, and the options that would need another are
//! refused as before.

use std::ffi::c_int;
use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::sigmask::Blocked;

/// Where `_PyRuntime.preconfig.utf8_mode` is, found once (in the server,
/// before it forks, so that workers share the answer).
static FIELD: OnceLock<Option<usize>> = OnceLock::new();

/// Whether this interpreter's UTF-8 mode can be changed (by [`set_utf8_mode`]).
#[pyfunction]
pub fn utf8_mode_settable(py: Python<'_>) -> bool {
    field(py).is_some()
}

/// Puts this interpreter in UTF-8 mode or out of it, for C code and in
/// `sys.flags`, as python started with `-X utf8={on}` would be. Returns
/// False, changing nothing, where [`utf8_mode_settable`] is False.
#[pyfunction]
pub fn set_utf8_mode(py: Python<'_>, on: bool) -> PyResult<bool> {
    let Some(field) = field(py) else {
        return Ok(false);
    };
    let changes = PyDict::new(py);
    changes.set_item("utf8_mode", c_int::from(on))?;
    let flags = flags_with(py, &changes)?;
    // SAFETY: `field` is the verified address of an int inside `_PyRuntime`,
    // which lives as long as the process; the GIL is held, so no other
    // thread reads it meanwhile.
    unsafe { (field as *mut c_int).write(c_int::from(on)) };
    py.import("sys")?.setattr("flags", flags)?;
    Ok(true)
}

/// Makes `sys.flags` show `changes` (field name to value), as for a python
/// started with the options behind them; the interpreter's settings
/// themselves are the caller's to change.
#[pyfunction]
pub fn set_flags(py: Python<'_>, changes: &Bound<'_, PyDict>) -> PyResult<()> {
    let flags = flags_with(py, changes)?;
    py.import("sys")?.setattr("flags", flags)
}

fn field(py: Python<'_>) -> Option<usize> {
    *FIELD.get_or_init(|| locate(py))
}

/// `PyPreConfig`'s ints on POSIX, in order, as from Python 3.8 on:
/// `_config_init`, `parse_argv`, `isolated`, `use_environment`,
/// `configure_locale`, `coerce_c_locale`, `coerce_c_locale_warn`,
/// `utf8_mode`, `dev_mode`, `allocator`.
const PRECONFIG_INTS: usize = 10;
const UTF8_MODE: usize = 7;

/// The address of `_PyRuntime.preconfig.utf8_mode`, if it can be found and
/// proved.
fn locate(py: Python<'_>) -> Option<usize> {
    let flags = py.import("sys").ok()?.getattr("flags").ok()?;
    // Some flags are bools (`dev_mode`), which do not extract as ints.
    let flag = |name: &str| {
        flags
            .getattr(name)
            .ok()?
            .call_method0("__index__")
            .ok()?
            .extract::<c_int>()
            .ok()
    };
    // Under -X warn_default_encoding the proof below would warn.
    if flag("warn_default_encoding")? != 0 {
        return None;
    }
    let expected = Expected {
        isolated: flag("isolated")?,
        use_environment: 1 - flag("ignore_environment")?,
        utf8_mode: flag("utf8_mode")?,
        dev_mode: flag("dev_mode")?,
    };
    let (start, len) = runtime_state()?;
    let last = len.checked_sub(PRECONFIG_INTS * size_of::<c_int>())?;
    // Other ints in `_PyRuntime` can hold the same values (the main
    // interpreter's config follows much later), so each match, in order, is
    // a candidate until one is proved: `preconfig` comes early.
    (0..=last)
        .step_by(size_of::<c_int>())
        .filter(|offset| {
            // SAFETY: inside the `_PyRuntime` object, whose size the symbol
            // table gave; `start` is aligned for an int, and so is `offset`.
            let ints = unsafe { ((start + offset) as *const [c_int; PRECONFIG_INTS]).read() };
            expected.matches(&ints)
        })
        .map(|offset| start + offset + UTF8_MODE * size_of::<c_int>())
        .take(CANDIDATES)
        .find(|&field| proved(py, field, expected.utf8_mode))
}

/// How many matches [`locate`] tries to prove before it gives up.
const CANDIDATES: usize = 4;

/// What this interpreter's `sys.flags` say its `PyPreConfig` holds.
struct Expected {
    isolated: c_int,
    use_environment: c_int,
    utf8_mode: c_int,
    dev_mode: c_int,
}

impl Expected {
    fn matches(&self, ints: &[c_int; PRECONFIG_INTS]) -> bool {
        let [
            config_init,
            parse_argv,
            isolated,
            use_environment,
            configure_locale,
            coerce,
            coerce_warn,
            utf8_mode,
            dev_mode,
            allocator,
        ] = *ints;
        (1..=3).contains(&config_init)
            && (0..=1).contains(&parse_argv)
            && isolated == self.isolated
            && use_environment == self.use_environment
            && (0..=1).contains(&configure_locale)
            && (0..=2).contains(&coerce)
            && (0..=1).contains(&coerce_warn)
            && utf8_mode == self.utf8_mode
            && dev_mode == self.dev_mode
            && (0..=8).contains(&allocator)
    }
}

/// Whether the int at `field` is the one `io.text_encoding(None)` reads:
/// its answer must follow the int flipped and back. Signals wait meanwhile,
/// so that no handler runs while the int may be another field's.
fn proved(py: Python<'_>, field: usize, current: c_int) -> bool {
    let Ok(text_encoding) = py.import("_io").and_then(|io| io.getattr("text_encoding")) else {
        return false;
    };
    let says_utf8 = || {
        let answer = text_encoding
            .call1(PyTuple::new(py, [py.None()]).ok()?)
            .ok()?;
        Some(answer.extract::<String>().ok()? == "utf-8")
    };
    let field = field as *mut c_int;
    let _blocked = Blocked::all();
    let before = says_utf8();
    // SAFETY: an int inside `_PyRuntime` (see `locate`), put back at once;
    // the GIL is held and signals are blocked, so nothing else runs between.
    unsafe { field.write(1 - current) };
    let flipped = says_utf8();
    // SAFETY: as above.
    unsafe { field.write(current) };
    before == Some(current == 1) && flipped == Some(current != 1)
}

/// glibc's `dladdr1` request for the symbol's ELF entry (`<dlfcn.h>`).
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
const RTLD_DL_SYMENT: libc::c_int = 1;

/// Where `_PyRuntime` starts and how many bytes it has.
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
fn runtime_state() -> Option<(usize, usize)> {
    let name = c"_PyRuntime";
    // SAFETY: a NUL-terminated name, looked up in the loaded objects.
    let start = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if start.is_null() {
        return None;
    }
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::uninit();
    let mut symbol: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: `info` and `symbol` are written by dladdr1, which with
    // RTLD_DL_SYMENT stores a pointer to the symbol's ELF entry.
    let known = unsafe { libc::dladdr1(start, info.as_mut_ptr(), &mut symbol, RTLD_DL_SYMENT) };
    if known == 0 || symbol.is_null() {
        return None;
    }
    // SAFETY: dladdr1 succeeded, so both are filled in.
    let (info, symbol) = unsafe { (info.assume_init(), &*symbol.cast::<libc::Elf64_Sym>()) };
    if info.dli_saddr != start || start as usize % align_of::<c_int>() != 0 {
        return None;
    }
    Some((start as usize, usize::try_from(symbol.st_size).ok()?))
}

#[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
fn runtime_state() -> Option<(usize, usize)> {
    None
}

/// A copy of `sys.flags` (a struct sequence, whose type cannot be
/// instantiated from Python) with the fields `changes` names set to its
/// values.
fn flags_with<'py>(py: Python<'py>, changes: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
    let flags = py.import("sys")?.getattr("flags")?;
    let kind = flags.get_type();
    let names: Vec<String> = kind.getattr("__match_args__")?.extract()?;
    let fields: isize = kind.getattr("n_fields")?.extract()?;
    let unnamed: isize = kind.getattr("n_unnamed_fields")?.extract()?;
    if unnamed != 0 {
        return Err(PyValueError::new_err("sys.flags has unnamed fields"));
    }
    // Every field, the hidden ones too (3.13's `gil`), which indexing does
    // not reach.
    let mut items = (0..fields)
        .map(|field| {
            // SAFETY: `flags` is a struct sequence of `n_fields` items, all
            // set; GetItem borrows the reference, which becomes our own.
            unsafe {
                Bound::from_borrowed_ptr_or_err(
                    py,
                    pyo3::ffi::PyStructSequence_GetItem(flags.as_ptr(), field),
                )
            }
        })
        .collect::<PyResult<Vec<_>>>()?;
    for (name, value) in changes.iter() {
        let name: String = name.extract()?;
        let index = names
            .iter()
            .position(|field| *field == name)
            .ok_or_else(|| PyValueError::new_err(format!("sys.flags has no field {name}")))?;
        items[index] = value;
    }
    // SAFETY: a new struct sequence of `sys.flags`' own type gets each of
    // its `n_fields` items exactly once, each a new reference (SetItem
    // steals it).
    unsafe {
        let copy =
            Bound::from_owned_ptr_or_err(py, pyo3::ffi::PyStructSequence_New(kind.as_type_ptr()))?;
        for (field, item) in (0..fields).zip(items) {
            pyo3::ffi::PyStructSequence_SetItem(copy.as_ptr(), field, item.into_ptr());
        }
        Ok(copy)
    }
}
