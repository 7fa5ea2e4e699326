//! Making the warm heap immortal (Python 3.12 and later), so that runs stop
//! copying the server's pages to count references.
//!
//! A worker shares the server's memory until it writes to a page, and CPython
//! writes to an object whenever code merely uses it: `Py_INCREF` and
//! `Py_DECREF` change its reference count. A run that calls a warm function
//! or reads a warm string copies the page the object lives on, and a `-c
//! pass` run on a numpy server copied some 660 pages, most of them for
//! reference counts. Since 3.12 (PEP 683) CPython leaves alone the count of
//! an object that holds its immortal value, and never frees such an object;
//! it uses that for `None`, small ints and interned strings. The server gives
//! the value to every object it can reach, once, just before it serves, and
//! workers then copy about 40% fewer pages a run (see the README's Speed
//! section). Strings and bytes also get their hash computed, which CPython
//! caches inside the object on first use.
//!
//! The objects reached are those the collector tracks (the caller passes
//! `gc.get_objects()`) and everything they refer to, by the type's own
//! traversal: strings, numbers and other objects the collector does not
//! track are found through the containers holding them. An object that is
//! already immortal is not looked into again, which also ends the walk
//! where it meets CPython's own immortal objects.
//!
//! What changes for programs: `sys.getrefcount` of a warm object says it is
//! immortal, checks built on it see a shared object (numpy's
//! `ndarray.resize` of a warm array wants `refcheck=False`), and a warm
//! object a run drops is not freed, so its `__del__` and weakref callbacks
//! do not run. `--no-immortal` leaves the heap as it is.
//!
//! Before it changes anything the server checks that this interpreter
//! honours the value it read (`None`'s count): an object of its own, given
//! that count, must keep it through a reference libpython takes and drops.
//! Elsewhere (3.11, free-threaded builds, PyPy) nothing changes.

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Makes every object in `objects` and everything reachable from them
/// immortal, and returns how many objects it changed: 0 where this
/// interpreter has no immortal objects that work as 3.12's do.
pub fn immortalize(objects: &Bound<'_, PyList>) -> usize {
    #[cfg(all(Py_3_12, not(any(Py_GIL_DISABLED, PyPy, GraalPy))))]
    {
        walk::immortalize(objects)
    }
    #[cfg(not(all(Py_3_12, not(any(Py_GIL_DISABLED, PyPy, GraalPy)))))]
    {
        let _ = objects;
        0
    }
}

#[cfg(all(Py_3_12, not(any(Py_GIL_DISABLED, PyPy, GraalPy))))]
mod walk {
    use std::ffi::{c_int, c_void};

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::PyList;

    type Stack = Vec<*mut ffi::PyObject>;

    pub fn immortalize(objects: &Bound<'_, PyList>) -> usize {
        // SAFETY: the GIL is held (`objects` is bound to it); `None` lives
        // as long as the interpreter.
        let immortal = unsafe { ffi::Py_REFCNT(ffi::Py_None()) };
        if !honoured(objects.py(), immortal) {
            return 0;
        }
        let list = objects.as_ptr();
        // SAFETY: `list` is a list; the items are borrowed from it, which
        // holds them for the whole walk.
        let mut stack: Stack = (0..objects.len())
            .map(|index| unsafe { ffi::PyList_GET_ITEM(list, index as ffi::Py_ssize_t) })
            .collect();
        let mut changed = 0;
        while let Some(object) = stack.pop() {
            // SAFETY: every pointer on the stack is a live object: an item
            // of `objects`, or one a live object's traversal reported, which
            // that object holds a reference to. Nothing in the loop runs
            // Python code or frees objects (hashing exact strings and bytes
            // is C code), and the GIL is held throughout.
            unsafe {
                if ffi::Py_REFCNT(object) == immortal {
                    continue;
                }
                set_count(object, immortal);
                changed += 1;
                if ffi::PyUnicode_CheckExact(object) != 0 || ffi::PyBytes_CheckExact(object) != 0 {
                    ffi::PyObject_Hash(object);
                }
                // Whether the collector would traverse it: a static type,
                // say, is an object of a GC type that must not be.
                if ffi::PyObject_IS_GC(object) != 0
                    && let Some(traverse) = (*ffi::Py_TYPE(object)).tp_traverse
                {
                    traverse(object, push, (&raw mut stack).cast());
                }
            }
        }
        changed
    }

    /// Whether this interpreter leaves an object whose count is `immortal`
    /// alone: an object made for the test, given that count, must keep it
    /// while libpython's own code puts it into a tuple and frees the tuple.
    fn honoured(py: Python<'_>, immortal: ffi::Py_ssize_t) -> bool {
        // SAFETY: the GIL is held; `probe` and `tuple` are new references
        // owned here until they are given up below.
        unsafe {
            let probe = ffi::PyFloat_FromDouble(0.5);
            if probe.is_null() {
                drop(PyErr::take(py));
                return false;
            }
            set_count(probe, immortal);
            let tuple = ffi::PyTuple_Pack(1, probe);
            if tuple.is_null() {
                drop(PyErr::take(py));
                return false;
            }
            let kept_in = ffi::Py_REFCNT(probe) == immortal;
            ffi::Py_DECREF(tuple);
            let kept = kept_in && ffi::Py_REFCNT(probe) == immortal;
            if !kept {
                // An interpreter that counted it as usual: the probe's own
                // reference is its only one again, and frees it.
                set_count(probe, 1);
                ffi::Py_DECREF(probe);
            }
            kept
        }
    }

    /// # Safety
    /// `object` is a live object and the GIL is held.
    unsafe fn set_count(object: *mut ffi::PyObject, count: ffi::Py_ssize_t) {
        // SAFETY: per the function's contract; on these builds the count is
        // the `ob_refcnt` word of the union.
        unsafe { (*object).ob_refcnt.ob_refcnt = count };
    }

    /// The `visitproc` handed to `tp_traverse`: keeps each referent for the
    /// walk to look at.
    unsafe extern "C" fn push(object: *mut ffi::PyObject, stack: *mut c_void) -> c_int {
        if !object.is_null() {
            // SAFETY: `stack` is the walk's stack, which `immortalize` passed
            // and does not touch while the traversal runs.
            unsafe { (*stack.cast::<Stack>()).push(object) };
        }
        0
    }
}
