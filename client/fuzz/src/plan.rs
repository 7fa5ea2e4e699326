//! How a fuzz input becomes a byte stream that arrives in pieces.
//!
//! Both peers MUST accept a frame split over several reads, or several frames
//! in one read (`protocol.md` §2), and descriptors ride on the first byte of
//! whichever write carried them (§4). The stream harnesses therefore let the
//! fuzzer choose where the stream is cut and how many descriptors each piece
//! carries, as a short header in front of the stream itself:
//!
//! ```text
//! byte 0        bits 0-3: n, the number of piece entries that follow
//!               bit 4:    the request is a hand-off (server_request only)
//! 2 bytes × n   one entry per piece: its length (0-255), then the number of
//!               descriptors sent with it (taken modulo 8)
//! rest          the stream
//! ```
//!
//! Pieces take the stream's bytes in order; a piece longer than what is left
//! gets what is left. Whatever the entries leave over arrives as one last piece
//! without descriptors. A piece of length 0 stands for a read that finds
//! nothing ready. An empty input is an empty stream in no pieces.

/// One write of the sender, as the reader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Where in the stream the piece starts.
    pub start: usize,
    /// Its bytes; 0 for a read that finds nothing ready.
    pub len: usize,
    /// Descriptors sent with its first byte.
    pub fds: usize,
}

/// The pieces a stream arrives in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The request reaches a worker from the server rather than from a client,
    /// with the client's connection as one more, leading descriptor.
    pub handed_off: bool,
    /// The pieces, covering the whole stream in order.
    pub pieces: Vec<Piece>,
}

/// Bit of the header byte that marks a hand-off.
const HANDED_OFF: u8 = 1 << 4;

/// The most descriptors one piece carries. A hand-off carries at most five
/// (the connection and the four of a `RUN`) and the server's control buffer
/// has room for six, so seven reach both "too many" and truncated control
/// data, which the reader must refuse alike.
pub const MAX_PIECE_FDS: usize = 7;

impl Plan {
    /// Splits a fuzz input into its plan and its stream.
    pub fn split(data: &[u8]) -> (Plan, &[u8]) {
        let Some((&header, rest)) = data.split_first() else {
            return (Plan::default(), data);
        };
        let entries = usize::from(header & 0x0f).min(rest.len() / 2);
        let (entries, stream) = rest.split_at(entries * 2);
        let mut pieces = Vec::with_capacity(entries.len() / 2 + 1);
        let mut at = 0;
        for entry in entries.chunks_exact(2) {
            let len = usize::from(entry[0]).min(stream.len() - at);
            let fds = usize::from(entry[1]) % (MAX_PIECE_FDS + 1);
            pieces.push(Piece {
                start: at,
                len,
                fds,
            });
            at += len;
        }
        if at < stream.len() {
            pieces.push(Piece {
                start: at,
                len: stream.len() - at,
                fds: 0,
            });
        }
        let plan = Plan {
            handed_off: header & HANDED_OFF != 0,
            pieces,
        };
        (plan, stream)
    }

    /// The fuzz input that [`Plan::split`] turns into `pieces` (each a length
    /// and a number of descriptors) over `stream`; used to write seeds.
    ///
    /// Panics on more than 15 pieces, a piece longer than 255 bytes or with
    /// more than [`MAX_PIECE_FDS`] descriptors: the format cannot say those.
    pub fn input(handed_off: bool, pieces: &[(usize, usize)], stream: &[u8]) -> Vec<u8> {
        assert!(pieces.len() <= 15, "at most 15 pieces");
        let mut out = vec![pieces.len() as u8 | if handed_off { HANDED_OFF } else { 0 }];
        for &(len, fds) in pieces {
            let len = u8::try_from(len).expect("a piece is at most 255 bytes");
            assert!(fds <= MAX_PIECE_FDS, "at most {MAX_PIECE_FDS} descriptors");
            out.extend([len, fds as u8]);
        }
        out.extend_from_slice(stream);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_without_entries_is_one_piece() {
        let (plan, stream) = Plan::split(&[0, 1, 2, 3]);
        assert_eq!(stream, [1, 2, 3]);
        assert_eq!(
            plan.pieces,
            [Piece {
                start: 0,
                len: 3,
                fds: 0
            }]
        );
    }

    #[test]
    fn pieces_cover_the_stream_in_order_and_the_rest_comes_last() {
        let input = Plan::input(true, &[(2, 3), (0, 0), (1, 1)], b"abcdef");
        let (plan, stream) = Plan::split(&input);
        assert!(plan.handed_off);
        assert_eq!(stream, b"abcdef");
        let pieces: Vec<_> = plan
            .pieces
            .iter()
            .map(|p| (p.start, p.len, p.fds))
            .collect();
        assert_eq!(pieces, [(0, 2, 3), (2, 0, 0), (2, 1, 1), (3, 3, 0)]);
    }

    #[test]
    fn a_piece_longer_than_the_stream_gets_what_is_left() {
        let (plan, stream) = Plan::split(&[2, 200, 1, 200, 0, b'x']);
        assert_eq!(stream, b"x");
        let lens: Vec<_> = plan.pieces.iter().map(|p| p.len).collect();
        assert_eq!(lens, [1, 0]);
    }
}
