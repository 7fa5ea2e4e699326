//! Packing the code objects a run executes onto a few pages of their own.
//!
//! The interpreter writes into a code object while it runs it: the
//! specializer's counters and caches live in its bytecode, a function's
//! first call rewrites its first instruction, and on 3.13 every conditional
//! jump records the way it went, on every execution. A worker copies the
//! server's page under each such write. The code objects of warmfork's own
//! run path were made when their modules were imported, between the other
//! objects of that time: a `-c pass` run wrote some 60 pages for them, most
//! holding a single code object it used.
//!
//! [`pack`] gives functions copies of their code (`code.replace()`) made in
//! a mapping of their own, one after another: a few pages for all. The
//! copies are allocated through CPython's object allocator, so they are
//! ordinary objects; only where they lie differs. While it copies, the
//! allocator is wrapped so that the one allocation of each copy's size that
//! follows the request comes from the mapping. A block of the mapping must
//! never reach the allocator's `free` (pymalloc would pass it on to the C
//! library's, which aborts): so every copy is kept alive for good (one
//! reference more, never dropped), and the allocator is put back as it was
//! if the copies are all the mapping holds. Should anything else have taken
//! a block of a copy's size meanwhile, the wrapper stays on `free` and
//! `realloc`: a block of the mapping freed is left unused, resized it moves
//! out.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Blocks in the mapping start this many bytes apart, as pymalloc's do, and
/// each is preceded by a header of as many bytes holding its size.
const ALIGNMENT: usize = 16;

/// The mapping: its start, end and the next free byte (0 before [`pack`]).
static START: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// The size of the allocation to serve from the mapping next; 0 for none.
static EXPECTED: AtomicUsize = AtomicUsize::new(0);
/// Blocks handed out from the mapping.
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// The object allocator wrapped, whose `ctx` the wrapper is installed with.
static mut UNDERLYING: Option<ffi::PyMemAllocatorEx> = None;

fn underlying() -> ffi::PyMemAllocatorEx {
    // SAFETY: written once, with the GIL held, before the wrapper that reads
    // it is installed; read only with the GIL held (allocator calls).
    unsafe {
        (*std::ptr::addr_of!(UNDERLYING)).expect("the wrapper is installed after UNDERLYING is set")
    }
}

fn in_mapping(ptr: *mut c_void) -> bool {
    let address = ptr as usize;
    START.load(Relaxed) <= address && address < END.load(Relaxed)
}

/// A block of `size` bytes from the mapping, if it has room.
fn take(size: usize) -> Option<*mut c_void> {
    let next = NEXT.load(Relaxed);
    let block = next + ALIGNMENT;
    let after = block.checked_add(size.next_multiple_of(ALIGNMENT))?;
    if next == 0 || after > END.load(Relaxed) {
        return None;
    }
    NEXT.store(after, Relaxed);
    BLOCKS.fetch_add(1, Relaxed);
    // SAFETY: the header lies inside the mapping, which is writable.
    unsafe { (next as *mut usize).write(size) };
    Some(block as *mut c_void)
}

extern "C" fn malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size != 0 && EXPECTED.load(Relaxed) == size {
        EXPECTED.store(0, Relaxed);
        if let Some(block) = take(size) {
            return block;
        }
    }
    let under = underlying();
    (under.malloc.expect("an allocator has malloc"))(under.ctx, size)
}

extern "C" fn realloc(_ctx: *mut c_void, ptr: *mut c_void, size: usize) -> *mut c_void {
    let under = underlying();
    if !in_mapping(ptr) {
        return (under.realloc.expect("an allocator has realloc"))(under.ctx, ptr, size);
    }
    let moved = (under.malloc.expect("an allocator has malloc"))(under.ctx, size);
    if !moved.is_null() {
        // SAFETY: `ptr` is a block of the mapping, whose size its header
        // holds; `moved` has room for `size` bytes; they do not overlap.
        unsafe {
            let old = (ptr as *const usize)
                .sub(ALIGNMENT / size_of::<usize>())
                .read();
            std::ptr::copy_nonoverlapping(ptr as *const u8, moved as *mut u8, old.min(size));
        }
    }
    moved
}

extern "C" fn free(_ctx: *mut c_void, ptr: *mut c_void) {
    if in_mapping(ptr) {
        return;
    }
    let under = underlying();
    (under.free.expect("an allocator has free"))(under.ctx, ptr);
}

/// How the object allocator is wrapped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wrapping {
    /// Everything: while copying.
    Everything,
    /// `free` and `realloc`, where the mapping may hold more than copies.
    Releasing,
    /// Nothing: the allocator as it was.
    Nothing,
}

fn install(wrapping: Wrapping) {
    let under = underlying();
    let mut allocator = if wrapping == Wrapping::Nothing {
        under
    } else {
        ffi::PyMemAllocatorEx {
            malloc: if wrapping == Wrapping::Everything {
                Some(malloc)
            } else {
                under.malloc
            },
            realloc: Some(realloc),
            free: Some(free),
            ..under
        }
    };
    // SAFETY: with the GIL held; the wrapper hands on to the allocator it
    // wraps, as CPython requires of an allocator set after start-up.
    unsafe { ffi::PyMem_SetAllocator(ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ, &mut allocator) };
}

/// The bytes `PyObject_NewVar` asks for a code object like `code`.
fn allocation_size(code: &Bound<'_, PyAny>) -> usize {
    let object = code.as_ptr();
    // SAFETY: a live code object: a variable-size object of its type.
    unsafe {
        let kind = ffi::Py_TYPE(object);
        let units = ffi::Py_SIZE(object) as usize;
        ((*kind).tp_basicsize as usize + units * (*kind).tp_itemsize as usize)
            .next_multiple_of(size_of::<usize>())
    }
}

/// Every code object in `code` (itself first, then those in its
/// constants, depth first).
fn nested<'py>(code: &Bound<'py, PyAny>, into: &mut Vec<Bound<'py, PyAny>>) -> PyResult<()> {
    into.push(code.clone());
    let code_type = code.get_type();
    for constant in code.getattr("co_consts")?.cast_into::<PyTuple>()?.iter() {
        if constant.get_type().is(&code_type) {
            nested(&constant, into)?;
        }
    }
    Ok(())
}

/// Gives each function in `functions` a copy of its code, and each code
/// object in `codes` one (returned, in the same order), all made in a
/// mapping of their own; code objects nested in their constants are copied
/// too. Returns the copies of `codes`, how many copies lie in the mapping,
/// the bytes it spans, and whether the wrapper stays on `free` and
/// `realloc` (something else took a block). Only once in a process.
#[pyfunction]
pub fn pack<'py>(
    py: Python<'py>,
    functions: Vec<Bound<'py, PyAny>>,
    codes: Vec<Bound<'py, PyAny>>,
) -> PyResult<(Vec<Bound<'py, PyAny>>, usize, usize, bool)> {
    if START.load(Relaxed) != 0 {
        return Err(PyRuntimeError::new_err("the code is packed already"));
    }
    let mut originals = Vec::new();
    for function in &functions {
        nested(&function.getattr("__code__")?, &mut originals)?;
    }
    for code in &codes {
        nested(code, &mut originals)?;
    }
    let total: usize = originals
        .iter()
        .map(|code| ALIGNMENT + allocation_size(code).next_multiple_of(ALIGNMENT))
        .sum();
    let length = total.max(1).next_multiple_of(rustix::param::page_size());
    // SAFETY: a new private anonymous mapping, never unmapped: blocks in it
    // may be in use for as long as the process lives.
    let start = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    let start = start as usize;
    let mut wrapped = ffi::PyMemAllocatorEx {
        ctx: std::ptr::null_mut(),
        malloc: None,
        calloc: None,
        realloc: None,
        free: None,
    };
    // SAFETY: with the GIL held, as the rest of this function.
    unsafe {
        ffi::PyMem_GetAllocator(ffi::PyMemAllocatorDomain::PYMEM_DOMAIN_OBJ, &mut wrapped);
        *std::ptr::addr_of_mut!(UNDERLYING) = Some(wrapped);
    }
    START.store(start, Relaxed);
    END.store(start + length, Relaxed);
    NEXT.store(start, Relaxed);
    let memo = PyDict::new(py);
    install(Wrapping::Everything);
    let copied = copy_all(&functions, &codes, &memo);
    EXPECTED.store(0, Relaxed);
    let mut packed = 0;
    for (_, copy) in memo.iter() {
        packed += usize::from(in_mapping(copy.as_ptr().cast()));
        // Kept alive for good, so never freed.
        std::mem::forget(copy.unbind());
    }
    let stray = packed != BLOCKS.load(Relaxed);
    install(if stray {
        Wrapping::Releasing
    } else {
        Wrapping::Nothing
    });
    Ok((copied?, packed, NEXT.load(Relaxed) - start, stray))
}

/// The copies: functions get theirs as `__code__`; those of `codes` are
/// returned. `memo` maps each original's address to its copy.
fn copy_all<'py>(
    functions: &[Bound<'py, PyAny>],
    codes: &[Bound<'py, PyAny>],
    memo: &Bound<'py, PyDict>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    for function in functions {
        let copy = copy(&function.getattr("__code__")?, memo)?;
        function.setattr("__code__", copy)?;
    }
    codes.iter().map(|code| copy(code, memo)).collect()
}

/// A copy of `code` made in the mapping, and of the code objects in its
/// constants, each copied once.
fn copy<'py>(code: &Bound<'py, PyAny>, memo: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
    let py = code.py();
    let key = code.as_ptr() as usize;
    if let Some(done) = memo.get_item(key)? {
        return Ok(done);
    }
    let code_type = code.get_type();
    let mut constants = Vec::new();
    let mut changed = false;
    for constant in code.getattr("co_consts")?.cast_into::<PyTuple>()?.iter() {
        if constant.get_type().is(&code_type) {
            constants.push(copy(&constant, memo)?);
            changed = true;
        } else {
            constants.push(constant);
        }
    }
    let replace = code.getattr("replace")?;
    let kwargs = PyDict::new(py);
    if changed {
        kwargs.set_item("co_consts", PyTuple::new(py, constants)?)?;
    }
    EXPECTED.store(allocation_size(code), Relaxed);
    let copied = replace.call((), Some(&kwargs));
    EXPECTED.store(0, Relaxed);
    let copied = copied?;
    memo.set_item(key, &copied)?;
    Ok(copied)
}
