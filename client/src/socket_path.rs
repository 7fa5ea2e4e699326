//! Where client and server meet: the rule that picks the socket path.
//!
//! 1. `$WARMFORK_SOCKET`, when set and not empty;
//! 2. else `$XDG_RUNTIME_DIR/warmfork/NAME.sock`, when that variable is set
//!    and not empty;
//! 3. else `/tmp/warmfork-UID/NAME.sock`.
//!
//! `NAME` is `default` unless a caller chooses another. Both sides call this
//! one function, so they cannot disagree.

/// The longest socket path the kernel accepts: `sun_path` is 108 bytes and
/// the path needs a terminating NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// The socket name used when none is chosen.
pub const DEFAULT_NAME: &[u8] = b"default";

/// What the rule reads from the environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Inputs<'a> {
    /// The value of `WARMFORK_SOCKET`, if set.
    pub warmfork_socket: Option<&'a [u8]>,
    /// The value of `XDG_RUNTIME_DIR`, if set.
    pub xdg_runtime_dir: Option<&'a [u8]>,
    /// The real user id.
    pub uid: u32,
    /// The server's name; [`DEFAULT_NAME`] unless chosen otherwise.
    pub name: &'a [u8],
}

/// The socket path would not fit in a `sockaddr_un`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathTooLong;

/// Writes the socket path chosen by the rule into `out` and returns its
/// length. The path is not NUL-terminated.
pub fn socket_path(
    inputs: &Inputs<'_>,
    out: &mut [u8; MAX_SOCKET_PATH_LEN],
) -> Result<usize, PathTooLong> {
    let mut path = Builder { out, len: 0 };
    if let Some(explicit) = inputs.warmfork_socket.filter(|v| !v.is_empty()) {
        path.push(explicit)?;
    } else {
        socket_dir(inputs, &mut path)?;
        path.push(b"/")?;
        path.push(inputs.name)?;
        path.push(b".sock")?;
    }
    Ok(path.len)
}

/// Writes the directory that holds named sockets into `out` (the directory
/// of step 2 or 3 of the rule) and returns its length.
pub fn socket_dir_path(
    inputs: &Inputs<'_>,
    out: &mut [u8; MAX_SOCKET_PATH_LEN],
) -> Result<usize, PathTooLong> {
    let mut path = Builder { out, len: 0 };
    socket_dir(inputs, &mut path)?;
    Ok(path.len)
}

fn socket_dir(inputs: &Inputs<'_>, path: &mut Builder<'_>) -> Result<(), PathTooLong> {
    match inputs.xdg_runtime_dir.filter(|v| !v.is_empty()) {
        Some(runtime) => {
            path.push(runtime)?;
            path.push(b"/warmfork")
        }
        None => {
            path.push(b"/tmp/warmfork-")?;
            path.push_decimal(inputs.uid)
        }
    }
}

struct Builder<'a> {
    out: &'a mut [u8; MAX_SOCKET_PATH_LEN],
    len: usize,
}

impl Builder<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), PathTooLong> {
        let end = self
            .len
            .checked_add(bytes.len())
            .filter(|&e| e <= MAX_SOCKET_PATH_LEN)
            .ok_or(PathTooLong)?;
        self.out[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn push_decimal(&mut self, n: u32) -> Result<(), PathTooLong> {
        self.push(Decimal::of(n).as_bytes())
    }
}

/// A number written in decimal digits, for paths that hold one (a uid, a
/// descriptor under `/proc/self/fdinfo`), without an allocator.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    digits: [u8; 10],
    start: usize,
}

impl Decimal {
    /// The digits of `n`.
    pub fn of(mut n: u32) -> Decimal {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    /// The digits, most significant first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(inputs: Inputs<'_>) -> Result<std::vec::Vec<u8>, PathTooLong> {
        let mut out = [0; MAX_SOCKET_PATH_LEN];
        let n = socket_path(&inputs, &mut out)?;
        Ok(out[..n].to_vec())
    }

    extern crate std;

    #[test]
    fn decimal_writes_every_u32() {
        assert_eq!(Decimal::of(0).as_bytes(), b"0");
        assert_eq!(Decimal::of(7).as_bytes(), b"7");
        assert_eq!(Decimal::of(1000).as_bytes(), b"1000");
        assert_eq!(Decimal::of(u32::MAX).as_bytes(), b"4294967295");
    }

    #[test]
    fn explicit_socket_wins() {
        let inputs = Inputs {
            warmfork_socket: Some(b"/x/s"),
            xdg_runtime_dir: Some(b"/run/user/7"),
            uid: 7,
            name: DEFAULT_NAME,
        };
        assert_eq!(path(inputs).unwrap(), b"/x/s");
    }

    #[test]
    fn runtime_dir_then_tmp() {
        let xdg = Inputs {
            xdg_runtime_dir: Some(b"/run/user/1000"),
            uid: 1000,
            name: DEFAULT_NAME,
            ..Inputs::default()
        };
        assert_eq!(path(xdg).unwrap(), b"/run/user/1000/warmfork/default.sock");
        let tmp = Inputs {
            warmfork_socket: Some(b""),
            xdg_runtime_dir: Some(b""),
            uid: 0,
            name: b"sage",
        };
        assert_eq!(path(tmp).unwrap(), b"/tmp/warmfork-0/sage.sock");
    }

    #[test]
    fn too_long_is_an_error_not_a_truncation() {
        let long = [b'a'; 120];
        let inputs = Inputs {
            warmfork_socket: Some(&long),
            ..Inputs::default()
        };
        assert_eq!(path(inputs), Err(PathTooLong));
    }
}
