//! The warmfork wire format, shared by the client binary and the server.
//!
//! `protocol.md` at the top of the repository is the normative description;
//! this crate is its one implementation. It turns bytes into typed messages
//! and back and does nothing else: no I/O, no allocation, no `unsafe`, so the
//! same code runs in the libc-free client and in the pyo3 server, and a fuzzer
//! can drive it directly.
//!
//! A run is one request frame from the client ([`request`]), whose ancillary
//! data carries the client's stdio and working-directory descriptors, answered
//! by reply frames from the server ([`reply`]). Every frame starts with the
//! same eight-byte [`frame::Prefix`].

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod frame;
pub mod reply;
pub mod request;
pub mod socket_path;

pub use frame::{Kind, Prefix, WireError};
pub use reply::{ErrorCode, ExitStatus, Reply};
pub use request::{FdNumbers, FdSet, RunHeader, RunRequest};
