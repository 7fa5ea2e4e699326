//! The memory and string routines the compiler calls (`memcpy`, `memset`,
//! `strlen`, ...), which libc would normally provide.
//!
//! They must not be written as plain loops: the optimiser recognises such a
//! loop as `memcpy` and calls `memcpy` from inside `memcpy`. On x86_64 the
//! copies and fills are single `rep` string instructions, which the CPU runs
//! at full speed; elsewhere, and for the comparisons, each byte goes through a
//! volatile access, which the optimiser leaves alone. The client moves a few
//! kilobytes per run, so nothing more elaborate pays.

use core::ffi::{c_char, c_int};
use core::ptr::{read_volatile, write_volatile};

/// `memcpy`—copies `n` bytes from `src` to `dst`, which do not overlap.
///
/// # Safety
///
/// `src` must be valid for `n` reads and `dst` for `n` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller guarantees both ranges; `rep movsb` copies forwards
    // (the direction flag is clear per the ABI) exactly `rcx` bytes.
    unsafe {
        core::arch::asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..n {
        // SAFETY: `i < n`, within both ranges the caller guarantees.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
    dst
}

/// `memmove`—copies `n` bytes from `src` to `dst`, which may overlap.
///
/// # Safety
///
/// `src` must be valid for `n` reads and `dst` for `n` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // A forward copy never overwrites bytes it has yet to read here.
        // SAFETY: the caller's guarantee, passed on.
        return unsafe { memcpy(dst, src, n) };
    }
    for i in (0..n).rev() {
        // SAFETY: `i < n`; copying backwards reads each byte before the
        // overlapping destination overwrites it.
        unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
    }
    dst
}

/// `memset`—fills `n` bytes at `dst` with the low byte of `value`.
///
/// # Safety
///
/// `dst` must be valid for `n` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: c_int, n: usize) -> *mut u8 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller guarantees the range; `rep stosb` stores `al` into
    // exactly `rcx` bytes going forwards.
    unsafe {
        core::arch::asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") value as u8, options(nostack, preserves_flags));
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..n {
        // SAFETY: `i < n`, within the range the caller guarantees.
        unsafe { write_volatile(dst.add(i), value as u8) };
    }
    dst
}

/// `memcmp`—compares `n` bytes; negative, zero or positive like C's.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> c_int {
    for i in 0..n {
        // SAFETY: `i < n`, within both ranges the caller guarantees.
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y {
            return c_int::from(x) - c_int::from(y);
        }
    }
    0
}

/// `bcmp`—zero when `n` bytes are equal; what the compiler calls for `==`.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> c_int {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { memcmp(a, b, n) }
}

/// `strlen`—the number of bytes before the terminating NUL.
///
/// # Safety
///
/// `s` must point at a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated, so every byte up to and
    // including the NUL is readable.
    while unsafe { read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}
