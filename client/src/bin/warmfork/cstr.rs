//! NUL-terminated strings built on the stack, for the system calls that take
//! a C string: the client has no allocator.

use core::ffi::CStr;

/// Up to `N - 1` bytes and their NUL.
pub struct CBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> CBuf<N> {
    /// `parts` one after another, NUL-terminated; `None` when they do not
    /// fit or hold a NUL themselves.
    pub fn join(parts: &[&[u8]]) -> Option<CBuf<N>> {
        let mut buf = [0; N];
        let mut len = 0;
        for part in parts {
            let end = len + part.len();
            if end >= N || part.contains(&0) {
                return None;
            }
            buf[len..end].copy_from_slice(part);
            len = end;
        }
        Some(CBuf { buf, len })
    }

    /// The string, as system calls take it.
    pub fn as_c_str(&self) -> &CStr {
        // `join` checked there is no other NUL and put one at `len`.
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }
}
