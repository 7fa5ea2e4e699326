//! Keeping glibc's fast bins empty in the server, so that workers do not copy
//! the server's heap to tidy them.
//!
//! glibc puts small freed chunks (up to 128 bytes) on "fast bins" and merges
//! them with their free neighbours only later, when an allocation of 1 KiB
//! or more comes (`malloc_consolidate`), writing to every one of them. In a
//! worker those chunks lie on pages it shares with the server, so the first
//! such allocation in every worker (reading the request makes one) walked
//! the chunks the server had freed since it started, copying their pages:
//! 2% of a run loop's CPU in a `perf` profile of a numpy server, and about
//! 10 of a run's 600 page faults.
//!
//! So the warm server empties its fast bins once and keeps them off
//! (`M_MXFAST` 0; `mallopt` consolidates before it changes the limit), and a
//! worker turns them back on just before the program runs, at the limit the
//! client's environment gives (glibc's default, or a `glibc.malloc.mxfast`
//! tunable in `GLIBC_TUNABLES`), so that the program's allocator behaves as
//! under python. Elsewhere than glibc both steps do nothing.

/// Empties the fast bins and keeps them off in this process and the workers
/// it forks (until [`restore`]). Call once, when the server is warm.
pub fn stop() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `mallopt` only changes the allocator's own settings.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// In a worker about to run a program, its environment already the
/// client's: turns the fast bins back on as python would have them, at the
/// `glibc.malloc.mxfast` tunable of `GLIBC_TUNABLES`, or at glibc's default
/// when there is none or glibc would ignore it (above its largest limit).
pub fn restore() {
    #[cfg(target_env = "gnu")]
    {
        // Read in place: an allocation here, the program's first, could land
        // on a page shared with the server and copy it.
        // SAFETY: no other thread changes the environment meanwhile; the
        // value, if any, is a C string inside it.
        let tunables = unsafe {
            let value = libc::getenv(c"GLIBC_TUNABLES".as_ptr());
            (!value.is_null()).then(|| std::ffi::CStr::from_ptr(value))
        };
        let tuned = tunables.and_then(|value| mxfast(value.to_bytes()));
        // SAFETY: as in `stop`; `mallopt` returns 0 for a limit it refuses.
        unsafe {
            if tuned.is_none_or(|limit| libc::mallopt(libc::M_MXFAST, limit) == 0) {
                libc::mallopt(libc::M_MXFAST, DEFAULT_MXFAST);
            }
        }
    }
}

/// glibc's fast-bin limit when no tunable sets it (`64 * sizeof(size_t) / 4`).
#[cfg(target_env = "gnu")]
const DEFAULT_MXFAST: libc::c_int = 64 * size_of::<usize>() as libc::c_int / 4;

/// The `glibc.malloc.mxfast` setting of a `GLIBC_TUNABLES` value
/// (`name=value` pairs separated by colons), if it sets it to a number,
/// written as glibc reads numbers there: decimal, `0x` hexadecimal, or
/// octal after a leading 0.
#[cfg(any(test, target_env = "gnu"))]
fn mxfast(tunables: &[u8]) -> Option<libc::c_int> {
    let value = tunables
        .split(|&byte| byte == b':')
        .filter_map(|pair| pair.strip_prefix(b"glibc.malloc.mxfast="))
        .next_back()?;
    let value = std::str::from_utf8(value).ok()?;
    let (digits, radix) = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None if value.len() > 1 && value.starts_with('0') => (&value[1..], 8),
        None => (value, 10),
    };
    libc::c_int::try_from(u32::from_str_radix(digits, radix).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::mxfast;

    #[cfg(target_env = "gnu")]
    #[test]
    fn small_chunks_freed_while_stopped_stay_off_the_fast_bins_until_restored() {
        fn fast_bin_bytes() -> usize {
            // SAFETY: mallinfo2 only reads the allocator's statistics.
            unsafe { libc::mallinfo2() }.fsmblks
        }
        // More 64-byte chunks than glibc's per-thread cache holds (7).
        fn free_small_chunks() {
            let chunks: Vec<Box<[u8; 48]>> = (0..64).map(|_| Box::new([0; 48])).collect();
            drop(std::hint::black_box(chunks));
        }
        super::stop();
        let before = fast_bin_bytes();
        free_small_chunks();
        let stopped = fast_bin_bytes();
        super::restore();
        free_small_chunks();
        let restored = fast_bin_bytes();
        assert!(
            stopped <= before,
            "{stopped} > {before} bytes on fast bins while stopped"
        );
        assert!(
            restored > stopped,
            "no fast bins after restore: {restored} bytes"
        );
    }

    #[test]
    fn the_tunable_is_found_among_others_and_the_last_setting_wins() {
        assert_eq!(mxfast(b""), None);
        assert_eq!(mxfast(b"glibc.malloc.mxfast=64"), Some(64));
        assert_eq!(
            mxfast(b"glibc.malloc.check=3:glibc.malloc.mxfast=0:glibc.malloc.mxfast=96"),
            Some(96)
        );
        assert_eq!(
            mxfast(b"glibc.malloc.mxfastx=64:xglibc.malloc.mxfast=8"),
            None
        );
        assert_eq!(mxfast(b"glibc.malloc.mxfast=lots"), None);
        assert_eq!(mxfast(b"glibc.malloc.mxfast=0x60"), Some(96));
        assert_eq!(mxfast(b"glibc.malloc.mxfast=0140"), Some(96));
        assert_eq!(mxfast(b"glibc.malloc.mxfast=0"), Some(0));
        assert_eq!(mxfast(b"glibc.malloc.mxfast=-8"), None);
    }
}
