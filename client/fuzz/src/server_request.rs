//! `server_request`: a request stream, cut at arbitrary points and carrying
//! arbitrary numbers of descriptors, read by the server's own reader.
//!
//! The server crate is a pyo3 extension that links libpython, and its
//! `Incoming` reader is private to it, so this crate compiles the reader's
//! source file, `server/src/incoming.rs`, as a module of its own. That file
//! needs only std, rustix and the wire library; if it ever grows a
//! `crate::` import, this harness stops building and must follow it.
//!
//! The harness sends the stream from one end of a `socketpair`, piece by
//! piece with `sendmsg` and each piece's descriptors in `SCM_RIGHTS`, and
//! drives `Incoming::read` and `Incoming::request` on the other end exactly as
//! the server's event loop does: one read per readiness, until the frame is
//! complete, refused or the peer hangs up. A zero-length piece is a wake-up
//! that finds nothing to read. When the pieces run out the sender closes.
//!
//! The outcome must be what `protocol.md` says for that stream (`expect`
//! below), the bytes read must be the stream's first bytes, in order, the
//! whole frame and no more, and every descriptor must be closed afterwards.

#[path = "../../../server/src/incoming.rs"]
mod incoming;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use warmfork::frame::{PREFIX_LEN, Prefix};
use warmfork::{ErrorCode, Kind, RunRequest, WireError};

use crate::plan::{MAX_PIECE_FDS, Piece, Plan};
use incoming::{Incoming, Progress};

/// The longest stream sent: far below a socket's buffer, so a send never
/// waits for the reader, and far above any request libFuzzer makes up.
const MAX_STREAM: usize = 64 * 1024;

/// The most descriptors a `RUN` frame carries: stdin, stdout, stderr, cwd
/// and the client's others.
const RUN_FDS: usize = 4 + warmfork::request::MAX_EXTRA_FDS;

/// Runs one input; panics when a property fails.
pub fn server_request(data: &[u8]) {
    spare_fd();
    let open_before = open_fds();
    let (plan, stream) = Plan::split(data);
    if stream.len() > MAX_STREAM {
        return;
    }
    let (client, server) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let mut incoming = if plan.handed_off {
        Incoming::handed_off()
    } else {
        // As the server reads: into the buffer of an earlier request, whose
        // bytes are still there.
        Incoming::reusing(vec![0xa5; 512])
    };
    let got = receive(&mut incoming, &plan.pieces, stream, client, &server);
    let want = expect(&plan, stream);
    let read = incoming.frame();
    match (&got, &want) {
        (Got::Complete(Ok(())), Outcome::Run) => {
            let Ok(run) = incoming.request() else {
                panic!("request() refused what it accepted a moment ago")
            };
            let reference = RunRequest::decode(read).expect("the frame decodes");
            assert_eq!(
                (run.fds, run.umask, run.ignored_signals),
                (reference.fds, reference.umask, reference.ignored_signals)
            );
            let leading = usize::from(plan.handed_off);
            assert_eq!(
                incoming.fds().len(),
                leading + run.fd_count(),
                "descriptors kept"
            );
            assert!(run.argv().eq(reference.argv()) && run.env().eq(reference.env()));
        }
        (Got::Complete(Err(got)), Outcome::Refused(want)) if got == want => {}
        (Got::Refused(got), Outcome::Refused(want)) if got == want => {}
        (Got::Closed, Outcome::Closed) => {}
        _ => panic!("the server's reader gave {got:?} where protocol.md says {want:?}"),
    }
    match got {
        // After a refusal the reader's buffer is abandoned as it stands.
        Got::Refused(_) => {}
        Got::Complete(_) => {
            let len = Prefix::parse(stream)
                .expect("a complete frame has a prefix")
                .len;
            assert_eq!(
                read,
                &stream[..len as usize],
                "the frame read is not the stream's"
            );
        }
        Got::Closed => assert_eq!(read, stream, "the bytes read are not the stream"),
    }
    // Let go of as the server does (descriptors closed, buffer kept), or as
    // a worker takes a hand-off (frame and descriptors, to be dropped).
    if plan.handed_off {
        drop(incoming.into_parts());
    } else {
        let _ = incoming.into_buffer();
    }
    drop(server);
    assert_eq!(open_fds(), open_before, "a descriptor was left open");
    // A large frame's share of the server's budget is given back.
    assert_eq!(
        incoming::large_frames_held(),
        0,
        "a large frame is still counted"
    );
}

/// What the server's reader made of the stream.
#[derive(Debug)]
enum Got {
    /// `read` said `Complete`; then `request` accepted it or refused it.
    Complete(Result<(), ErrorCode>),
    /// `read` refused the stream.
    Refused(ErrorCode),
    /// `read` saw the client hang up first.
    Closed,
}

/// Sends the pieces and reads them as the server's event loop does.
fn receive(
    incoming: &mut Incoming,
    pieces: &[Piece],
    stream: &[u8],
    client: OwnedFd,
    server: &OwnedFd,
) -> Got {
    for piece in pieces {
        if piece.len == 0 {
            // A wake-up with nothing to read (EAGAIN) changes nothing.
            match incoming.read(server) {
                Progress::Pending => continue,
                other => panic!("a read of nothing gave {other:?}"),
            }
        }
        send(
            &client,
            &stream[piece.start..piece.start + piece.len],
            piece.fds,
        );
        // Each read makes progress, so the piece is drained in at most this
        // many reads; more would be a server spinning on one client.
        for _ in 0..=piece.len {
            match incoming.read(server) {
                Progress::Pending => {}
                Progress::Complete => return Got::Complete(finish(incoming)),
                Progress::Refused(code, message) => return Got::Refused(refused(code, message)),
                Progress::Closed => panic!("the client has not hung up yet"),
            }
            if queued(server) == 0 {
                break;
            }
        }
        assert_eq!(
            queued(server),
            0,
            "the reader stopped reading a ready socket"
        );
    }
    drop(client);
    match incoming.read(server) {
        Progress::Closed => Got::Closed,
        other => panic!("the client hung up, the reader gave {other:?}"),
    }
}

/// What `Incoming::request` makes of a complete frame.
fn finish(incoming: &Incoming) -> Result<(), ErrorCode> {
    match incoming.request() {
        Ok(_) => Ok(()),
        Err(Progress::Refused(code, message)) => Err(refused(code, message)),
        Err(other) => panic!("request() gave {other:?}"),
    }
}

/// The code of a refusal, whose message must tell the client something.
fn refused(code: ErrorCode, message: String) -> ErrorCode {
    assert!(!message.is_empty(), "a {code:?} refusal without a message");
    code
}

/// What `protocol.md` says the server does with this stream and these
/// descriptors, worked out from the document's rules rather than the
/// reader's code: descriptors arrive with the first byte of their piece; the
/// prefix is checked before anything else is read (§7 step 5), refusing a
/// wrong version, an oversized frame and any kind but `RUN`; more
/// descriptors than a request can carry are refused as soon as they arrive
/// (§4); a complete frame must decode and carry exactly the descriptors its
/// flags announce.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Run,
    Refused(ErrorCode),
    Closed,
}

fn expect(plan: &Plan, stream: &[u8]) -> Outcome {
    let leading = usize::from(plan.handed_off);
    let mut frame_len = None;
    let mut fds = 0;
    let mut late = 0;
    // The pieces are contiguous and each is read only while the frame wants
    // bytes, so every piece reached here has its first byte read. Only the
    // descriptors of the piece with the frame's first byte are taken: those
    // with a later byte are closed, and make the request a bad one
    // (protocol.md §4).
    for piece in plan.pieces.iter().filter(|p| p.len > 0) {
        if piece.start == 0 {
            fds += piece.fds;
        } else {
            late += piece.fds;
        }
        if fds > leading + RUN_FDS {
            return Outcome::Refused(ErrorCode::BadRequest);
        }
        let end = piece.start + piece.len;
        if frame_len.is_none() && end >= PREFIX_LEN {
            let prefix = Prefix::parse(stream).expect("eight bytes are here");
            match prefix.validate() {
                Ok(Kind::Run) => frame_len = Some(prefix.len as usize),
                Ok(_) => return Outcome::Refused(ErrorCode::BadRequest),
                Err(error) => return Outcome::Refused(code_for(error)),
            }
        }
        if let Some(len) = frame_len.filter(|&len| end >= len) {
            return match RunRequest::decode(&stream[..len]) {
                Err(error) => Outcome::Refused(code_for(error)),
                Ok(run) if run.fd_count() + leading != fds || late > 0 => {
                    Outcome::Refused(ErrorCode::BadRequest)
                }
                Ok(_) => Outcome::Run,
            };
        }
    }
    Outcome::Closed
}

/// The error code `protocol.md` §7 gives each fault of a request.
fn code_for(error: WireError) -> ErrorCode {
    match error {
        WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        WireError::TooLarge(_) => ErrorCode::TooLarge,
        _ => ErrorCode::BadRequest,
    }
}

/// Sends `bytes` with `fds` copies of a spare descriptor attached.
fn send(socket: &OwnedFd, bytes: &[u8], fds: usize) {
    let spare = spare_fd();
    let attached = [spare; MAX_PIECE_FDS];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_PIECE_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds > 0 {
        assert!(control.push(SendAncillaryMessage::ScmRights(&attached[..fds])));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("sendmsg");
    assert_eq!(sent, bytes.len(), "a short send on a socketpair");
}

/// A descriptor to pass around; which file it is does not matter to the
/// reader. Opened once and kept for the life of the process.
fn spare_fd() -> BorrowedFd<'static> {
    static SPARE: OnceLock<std::fs::File> = OnceLock::new();
    SPARE
        .get_or_init(|| std::fs::File::open("/dev/null").expect("open /dev/null"))
        .as_fd()
}

/// Bytes the reader has not read yet.
fn queued(socket: &OwnedFd) -> u64 {
    rustix::io::ioctl_fionread(socket).expect("FIONREAD")
}

/// How many descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}
