//! Making the warm heap immortal (CPython 3.12 and 3.13), so that runs stop
//! copying the server's pages to count references.
//!
//! A worker shares the server's memory until it writes to a page, and CPython
//! writes to an object whenever code merely uses it: `Py_INCREF` and
//! `Py_DECREF` change its reference count. A run that calls a warm function
//! or reads a warm string copies the page the object lives on, and a `-c
//! pass` run on a numpy server copied some 700 pages, most of them for
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
//! Objects whose type has a finalizer (files, sockets, generators, classes
//! with `__del__`) are left mortal, so that a run that drops one flushes,
//! closes or runs it as python would; what they refer to is walked all the
//! same.
//!
//! What changes for programs: `sys.getrefcount` of a warm object says it is
//! immortal, checks built on it see a shared object (numpy's
//! `ndarray.resize` of a warm array wants `refcheck=False`, `marshal` writes
//! back-references for it), and a warm object a run drops is not freed, so
//! the callbacks of weak references to it do not run. The server's CLI
//! makes the heap immortal unless told `--no-immortal`; `warmfork.serve`
//! only when asked (`immortal=True`), since its caller's objects stay so
//! after it returns.
//!
//! Before it changes anything the server checks that this interpreter
//! honours the value it read (`None`'s count): an object of its own, given
//! that count, must keep it through a reference libpython takes and drops.
//! Elsewhere (3.11, 3.14, which keeps flags beside the count and is not yet
//! tested, free-threaded builds, PyPy) nothing changes.

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Makes every object in `objects` (the caller's `gc.get_objects()`) and
/// everything reachable from them immortal, but for those with a finalizer,
/// and returns how many objects it changed: 0 where this interpreter has no
/// immortal objects that work as 3.12's and 3.13's do.
#[pyfunction]
pub fn immortalize(objects: &Bound<'_, PyList>) -> usize {
    walk::immortalize(objects)
}

/// Where nothing is changed: before 3.12 there are no immortal objects;
/// 3.14 keeps flags beside the count (a heap object must not get `None`'s,
/// which says "statically allocated") and is not yet tested here.
#[cfg(not(all(Py_3_12, not(any(Py_3_14, Py_GIL_DISABLED, PyPy, GraalPy)))))]
mod walk {
    use pyo3::prelude::*;
    use pyo3::types::PyList;

    pub fn immortalize(_objects: &Bound<'_, PyList>) -> usize {
        0
    }
}

#[cfg(all(Py_3_12, not(any(Py_3_14, Py_GIL_DISABLED, PyPy, GraalPy))))]
mod walk {
    use std::collections::HashSet;
    use std::ffi::{c_int, c_void};

    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::PyList;

    /// The objects still to look at, and the count that marks those done.
    struct Walk {
        stack: Vec<*mut ffi::PyObject>,
        immortal: ffi::Py_ssize_t,
    }

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
        let stack = (0..objects.len())
            .map(|index| unsafe { ffi::PyList_GET_ITEM(list, index as ffi::Py_ssize_t) })
            .collect();
        let mut walk = Walk { stack, immortal };
        let mut changed = 0;
        // Objects left mortal, so that each is looked into once.
        let mut finalizable = HashSet::new();
        while let Some(object) = walk.stack.pop() {
            // SAFETY: every pointer on the stack is a live object: an item
            // of `objects`, or one a live object's traversal reported, which
            // that object holds a reference to. Nothing in the loop runs
            // Python code or frees objects (hashing exact strings and bytes
            // is C code), and the GIL is held throughout.
            unsafe {
                if ffi::Py_REFCNT(object) == immortal {
                    continue;
                }
                if has_finalizer(object) {
                    if !finalizable.insert(object as usize) {
                        continue;
                    }
                } else {
                    set_count(object, immortal);
                    changed += 1;
                    if ffi::PyUnicode_CheckExact(object) != 0
                        || ffi::PyBytes_CheckExact(object) != 0
                    {
                        ffi::PyObject_Hash(object);
                    }
                }
                // Whether the collector would traverse it: a static type,
                // say, is an object of a GC type that must not be.
                if ffi::PyObject_IS_GC(object) != 0
                    && let Some(traverse) = (*ffi::Py_TYPE(object)).tp_traverse
                {
                    traverse(object, push, (&raw mut walk).cast());
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

    /// Whether `object` does something when it is freed that a program may
    /// count on: a file flushing its buffer, a generator running its
    /// `finally` blocks, a class's `__del__`. Such objects stay mortal, so a
    /// run that drops one finalizes it as python would; there are few.
    ///
    /// # Safety
    /// `object` is a live object.
    unsafe fn has_finalizer(object: *mut ffi::PyObject) -> bool {
        // SAFETY: per the function's contract, so its type is live too.
        let kind = unsafe { &*ffi::Py_TYPE(object) };
        kind.tp_finalize.is_some() || kind.tp_del.is_some()
    }

    /// # Safety
    /// `object` is a live object and the GIL is held.
    unsafe fn set_count(object: *mut ffi::PyObject, count: ffi::Py_ssize_t) {
        // SAFETY: per the function's contract; on these builds the count is
        // the `ob_refcnt` word of the union.
        unsafe { (*object).ob_refcnt.ob_refcnt = count };
    }

    /// The `visitproc` handed to `tp_traverse`: keeps each referent not yet
    /// immortal for the walk to look at. Many are already (`None`, small
    /// ints, interned strings, objects reached before), and would only grow
    /// the stack.
    unsafe extern "C" fn push(object: *mut ffi::PyObject, walk: *mut c_void) -> c_int {
        // SAFETY: `walk` is the walk `immortalize` passed, which it does not
        // touch while the traversal runs; `object`, if not null, is a live
        // object the traversed one refers to.
        unsafe {
            let walk = &mut *walk.cast::<Walk>();
            if !object.is_null() && ffi::Py_REFCNT(object) != walk.immortal {
                walk.stack.push(object);
            }
        }
        0
    }
}
