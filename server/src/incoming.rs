//! Reading one `RUN` frame from a client without ever blocking the server.
//!
//! Each readiness event gets at most two bounded `recvmsg`s (the prefix, then
//! what has come of the rest), so a slow or silent client costs the others
//! nothing; the deadline for the whole frame is kept by the event loop.
//! Descriptors are received on every read (never with a plain
//! `read`, which would drop them) and owned from the start, so every one that
//! is not used is closed, whatever the client sent.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use warmfork::frame::{PREFIX_LEN, Prefix};
use warmfork::request::MAX_EXTRA_FDS;
use warmfork::{ErrorCode, FdSet, Kind, RunRequest, WireError};

/// Bytes asked of the kernel per read: enough for a typical request at once.
const READ_CHUNK: usize = 64 * 1024;

/// The most descriptors a `RUN` carries: the standard ones and the client's
/// others.
const MAX_RUN_FDS: usize = FdSet::SLOTS.len() + MAX_EXTRA_FDS;

/// Room for the descriptors of a hand-off (the connection, then those of a
/// `RUN`), plus one to notice a peer sending more.
const MAX_FDS: usize = 1 + MAX_RUN_FDS + 1;

/// The most bytes the server holds at once for frames larger than
/// [`READ_CHUNK`] that are still being received. Each frame is capped by
/// the protocol, but not their number: without this, a few hundred clients
/// each sending a maximal frame slowly held gigabytes, and under a memory
/// limit the server died of a failed allocation. Small frames, nearly all,
/// are bounded by the connections' descriptors instead.
pub const MAX_LARGE_FRAMES_HELD: usize = 256 << 20;

/// An allocation this large is never served from glibc's heap: more than
/// `DEFAULT_MMAP_THRESHOLD_MAX`, the most its dynamic mmap threshold rises
/// to on 64-bit systems (4 MiB times the size of a `long`).
const MAPPED_ON_ITS_OWN: usize = 4 * 1024 * 1024 * std::mem::size_of::<usize>() + 1;

/// Bytes of large frames being received in this process (see
/// [`MAX_LARGE_FRAMES_HELD`]); only the server's event loop changes it.
static LARGE_FRAMES_HELD: AtomicUsize = AtomicUsize::new(0);

/// A request being received.
#[derive(Debug, Default)]
pub struct Incoming {
    // Declared before `held`, so dropped (and freed) first.
    frame: Vec<u8>,
    /// What this frame counts against [`MAX_LARGE_FRAMES_HELD`].
    held: Held,
    /// Whether a large frame must fit in [`MAX_LARGE_FRAMES_HELD`]: the
    /// server's are, not the one a worker is handed (it inherited the
    /// server's count, which is none of its business).
    unbudgeted: bool,
    fds: Vec<OwnedFd>,
    len: Option<usize>,
    /// Descriptors that come before the request's own: none from a client,
    /// the client's connection when the server hands a request to a worker.
    leading_fds: usize,
    /// Descriptors that came with a later byte than the frame's first
    /// (closed on arrival): the request is then refused.
    late_fds: usize,
}

/// What one read brought.
#[derive(Debug)]
pub enum Progress {
    /// More bytes are needed.
    Pending,
    /// The whole frame is here.
    Complete,
    /// The client hung up before sending a whole frame.
    Closed,
    /// The client broke the protocol; tell it why and close.
    Refused(ErrorCode, String),
}

impl Incoming {
    /// A request as the server hands it to a worker: the client's connection
    /// rides ahead of the request's descriptors.
    pub fn handed_off() -> Incoming {
        Incoming {
            leading_fds: 1,
            unbudgeted: true,
            ..Incoming::default()
        }
    }

    /// A request read into `buffer`, the frame buffer of an earlier one
    /// (see [`Incoming::into_buffer`]).
    pub fn reusing(mut buffer: Vec<u8>) -> Incoming {
        buffer.clear();
        Incoming {
            frame: buffer,
            ..Incoming::default()
        }
    }

    /// Closes the descriptors not taken and gives back the frame buffer for
    /// the next request, unless it grew too large to keep.
    ///
    /// The server reuses buffers because an allocation of a few KiB walks the
    /// allocator's free chunks all over the heap, and each page it writes
    /// there is one the server shares with its workers, copied on the spot:
    /// some ten page copies per request, before the hand-off.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        (self.frame.capacity() <= READ_CHUNK).then_some(self.frame)
    }

    /// Reads what `socket` has ready, at most one frame's worth.
    pub fn read(&mut self, socket: &OwnedFd) -> Progress {
        let had_prefix = self.len.is_some();
        let progress = self.read_once(socket);
        // The prefix is read alone, to be checked first; the rest of the
        // frame was normally sent with it, so once this read has taken the
        // prefix the rest is read at once, not after another turn of the
        // caller's poll.
        if matches!(progress, Progress::Pending) && !had_prefix && self.len.is_some() {
            return self.read_once(socket);
        }
        progress
    }

    /// One bounded `recvmsg`: the prefix, or as much of the rest as is ready.
    fn read_once(&mut self, socket: &OwnedFd) -> Progress {
        let want = self.len.unwrap_or(PREFIX_LEN) - self.frame.len();
        let start = self.frame.len();
        let chunk = want.min(READ_CHUNK);
        self.frame.resize(start + chunk, 0);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let result = rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut self.frame[start..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        );
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                // Descriptors come with the frame's first byte (protocol.md
                // §4); those with a later one are counted, closed, and make
                // the request a bad one.
                if start == 0 {
                    self.fds.extend(fds);
                } else {
                    self.late_fds += fds.count();
                }
            }
        }
        let received = match &result {
            Ok(msg) => {
                if self.fds.len() > self.leading_fds + MAX_RUN_FDS {
                    return Progress::Refused(
                        ErrorCode::BadRequest,
                        "too many descriptors in the request".into(),
                    );
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    // Room was left for one descriptor more than a request
                    // may carry, so a cut-short list means this process could
                    // not take them all: it is out of descriptors.
                    return Progress::Refused(
                        ErrorCode::Internal,
                        "the server is out of file descriptors (its `ulimit -n` is too low for this load); try again"
                            .into(),
                    );
                }
                msg.bytes
            }
            Err(Errno::AGAIN | Errno::INTR) => 0,
            Err(_) => {
                self.frame.truncate(start);
                return Progress::Closed;
            }
        };
        self.frame.truncate(start + received);
        if result.is_ok() && received == 0 {
            return Progress::Closed;
        }
        if self.len.is_none() && self.frame.len() == PREFIX_LEN {
            if let Err(refusal) = self.take_prefix() {
                return refusal;
            }
        }
        match self.len {
            Some(len) if self.frame.len() == len => Progress::Complete,
            _ => Progress::Pending,
        }
    }

    /// Checks the prefix before anything else is read, so that a wrong
    /// version or an oversized frame is refused without reading the rest.
    fn take_prefix(&mut self) -> Result<(), Progress> {
        let prefix = Prefix::parse(&self.frame).expect("the prefix is complete");
        match prefix.validate() {
            Ok(Kind::Run) => {}
            Ok(other) => return Err(refusal(WireError::UnexpectedKind(other))),
            Err(error) => return Err(refusal(error)),
        }
        let len = prefix.len as usize;
        self.len = Some(len);
        self.make_room(len)
    }

    /// Room for the whole frame of `len` bytes, allocated at once, or a
    /// refusal that costs the server nothing: when the large frames already
    /// being received leave too little of [`MAX_LARGE_FRAMES_HELD`], or the
    /// allocation fails (under `ulimit -v`, say), where growing the buffer
    /// as the bytes came would have aborted the server.
    fn make_room(&mut self, len: usize) -> Result<(), Progress> {
        if len > READ_CHUNK && !self.unbudgeted {
            self.held = Held::take(len).ok_or_else(|| {
                Progress::Refused(
                    ErrorCode::Internal,
                    format!(
                        "the server is already receiving {} MiB of large requests from other clients; try again",
                        large_frames_held() >> 20
                    ),
                )
            })?;
        }
        let refused = |_| {
            Progress::Refused(
                ErrorCode::Internal,
                format!("the server cannot allocate {len} bytes for the request; try again"),
            )
        };
        if len <= READ_CHUNK || self.unbudgeted {
            let additional = len.saturating_sub(self.frame.len());
            return self.frame.try_reserve_exact(additional).map_err(refused);
        }
        // A large frame the server reads gets a fresh block of more than
        // glibc's largest mmap threshold, which glibc always maps on its own
        // and unmaps when freed; only the pages written become resident. A
        // smaller block, once freed, raises the threshold to its size
        // (mallopt(3)), so the next came from the heap, and a burst of them
        // stayed resident in the server for good, whose page tables every
        // fork then copied. (A worker, which lives for one run, needs none.)
        let mut frame = Vec::new();
        frame
            .try_reserve_exact(len.max(MAPPED_ON_ITS_OWN))
            .map_err(refused)?;
        frame.extend_from_slice(&self.frame);
        self.frame = frame;
        Ok(())
    }

    /// The complete frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The decoded request, once the frame is complete.
    pub fn request(&self) -> Result<RunRequest<'_>, Progress> {
        let request = RunRequest::decode(&self.frame).map_err(refusal)?;
        if self.leading_fds + request.fd_count() != self.fds.len() || self.late_fds > 0 {
            let carried = self.fds.len() - self.leading_fds.min(self.fds.len()) + self.late_fds;
            let late = if self.late_fds > 0 {
                format!(
                    ", {} of them with a later byte than the first",
                    self.late_fds
                )
            } else {
                String::new()
            };
            return Err(Progress::Refused(
                ErrorCode::BadRequest,
                format!(
                    "the request announces {} descriptors but carries {carried}{late}",
                    request.fd_count(),
                ),
            ));
        }
        Ok(request)
    }

    /// The received descriptors: the leading ones, then the request's in
    /// the order of its flag bits, then its extra ones.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// The complete frame and the received descriptors, owned (see
    /// [`Incoming::fds`]).
    pub fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (self.frame, self.fds)
    }
}

/// A large frame's share of [`MAX_LARGE_FRAMES_HELD`], given back when
/// dropped.
#[derive(Debug, Default)]
struct Held(usize);

impl Held {
    fn take(bytes: usize) -> Option<Held> {
        LARGE_FRAMES_HELD
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes)
                    .filter(|&total| total <= MAX_LARGE_FRAMES_HELD)
            })
            .ok()
            .map(|_| Held(bytes))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0 == 0 {
            return;
        }
        LARGE_FRAMES_HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Bytes of large frames being received (see [`MAX_LARGE_FRAMES_HELD`]).
pub fn large_frames_held() -> usize {
    LARGE_FRAMES_HELD.load(Ordering::Relaxed)
}

fn refusal(error: WireError) -> Progress {
    let code = match error {
        WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        WireError::TooLarge(_) => ErrorCode::TooLarge,
        _ => ErrorCode::BadRequest,
    };
    Progress::Refused(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("a socket pair")
    }

    fn run_frame() -> Vec<u8> {
        let mut frame = vec![0u8; 256];
        let len = warmfork::request::encode_run(
            &mut frame,
            FdSet::default(),
            0o22,
            0,
            &[b"warmfork", b"-c", b"pass"],
            &[b"HOME=/"],
        )
        .expect("room for the frame");
        frame.truncate(len);
        frame
    }

    #[test]
    fn a_frame_sent_whole_is_complete_after_one_read() {
        let (client, server) = pair();
        let frame = run_frame();
        rustix::io::write(&client, &frame).expect("send");
        let mut incoming = Incoming::default();
        assert!(matches!(incoming.read(&server), Progress::Complete));
        assert_eq!(incoming.frame(), &frame[..]);
    }

    #[test]
    fn a_reused_buffer_holds_the_next_request_alone() {
        let (client, server) = pair();
        let frame = run_frame();
        let mut used = vec![0xff; 1000];
        used.truncate(10);
        rustix::io::write(&client, &frame).expect("send");
        let mut incoming = Incoming::reusing(used);
        assert!(matches!(incoming.read(&server), Progress::Complete));
        assert_eq!(incoming.frame(), &frame[..]);
        let buffer = incoming.into_buffer().expect("a small buffer is kept");
        assert!(buffer.capacity() >= 1000, "the allocation is kept");
        let large = Incoming::reusing(Vec::with_capacity(READ_CHUNK + 1));
        assert!(large.into_buffer().is_none(), "a large buffer is dropped");
    }

    #[test]
    fn large_frames_are_refused_past_the_budget_and_give_it_back() {
        let large = |len: u32| {
            let (client, server) = pair();
            let mut header = [0u8; PREFIX_LEN];
            header[0] = warmfork::frame::VERSION;
            header[1] = Kind::Run as u8;
            header[4..8].copy_from_slice(&len.to_le_bytes());
            rustix::io::write(&client, &header).expect("send");
            let mut incoming = Incoming::default();
            let progress = incoming.read(&server);
            (client, incoming, progress)
        };
        let frame = 8 << 20;
        let fitting = MAX_LARGE_FRAMES_HELD / frame as usize;
        let held: Vec<_> = (0..fitting)
            .map(|_| {
                let (client, incoming, progress) = large(frame);
                assert!(matches!(progress, Progress::Pending), "{progress:?}");
                (client, incoming)
            })
            .collect();
        let (_client, _incoming, progress) = large(frame);
        assert!(
            matches!(&progress, Progress::Refused(ErrorCode::Internal, message) if message.contains("try again")),
            "{progress:?}"
        );
        let (_client, _incoming, small) = large(READ_CHUNK as u32);
        assert!(
            matches!(small, Progress::Pending),
            "a small frame is not counted: {small:?}"
        );
        drop(held);
        let (_client, _incoming, progress) = large(frame);
        assert!(matches!(progress, Progress::Pending), "{progress:?}");
    }

    #[test]
    fn a_frame_sent_in_parts_completes_when_the_rest_comes() {
        let (client, server) = pair();
        let frame = run_frame();
        let mut incoming = Incoming::default();
        rustix::io::write(&client, &frame[..PREFIX_LEN]).expect("send");
        assert!(matches!(incoming.read(&server), Progress::Pending));
        rustix::io::write(&client, &frame[PREFIX_LEN..]).expect("send");
        assert!(matches!(incoming.read(&server), Progress::Complete));
        assert_eq!(incoming.frame(), &frame[..]);
    }
}
