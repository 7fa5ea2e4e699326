//! Noticing that code the server has loaded changed on disk.
//!
//! The server watches the directories of every module it imported and of
//! its warm-up file with inotify, and keeps, per directory, the names that
//! matter. Editors either rewrite a file in place (`CLOSE_WRITE`) or write
//! a new one and rename it over the old (`MOVED_TO`); both are caught, as are
//! deletions. Python's own byte-code caches live in `__pycache__`, a
//! directory that is not watched.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

/// Watches for changes to a set of files.
#[derive(Debug)]
pub struct Watcher {
    inotify: OwnedFd,
    /// Per watch descriptor: its directory and the names watched in it.
    dirs: HashMap<i32, (PathBuf, HashSet<OsString>)>,
}

impl Watcher {
    /// Starts watching `files`. Files in directories that cannot be watched
    /// are skipped (the count of watched files is returned with it).
    pub fn new(files: &[PathBuf]) -> Result<(Watcher, usize), String> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
            .map_err(|e| format!("cannot watch for changed files: {e}"))?;
        let mask = WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE;
        let mut dirs: HashMap<i32, (PathBuf, HashSet<OsString>)> = HashMap::new();
        let mut watched = 0;
        for file in files {
            let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let Ok(wd) = inotify::add_watch(&inotify, dir, mask) else {
                continue;
            };
            dirs.entry(wd)
                .or_insert_with(|| (dir.to_owned(), HashSet::new()))
                .1
                .insert(name.to_owned());
            watched += 1;
        }
        Ok((Watcher { inotify, dirs }, watched))
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads the pending events and returns a watched file that changed, if
    /// any did.
    pub fn changed(&mut self) -> Option<PathBuf> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        let mut changed = None;
        while let Ok(event) = reader.next() {
            let Some((dir, names)) = self.dirs.get(&event.wd()) else {
                continue;
            };
            let Some(name) = event.file_name() else {
                continue;
            };
            let name = std::ffi::OsStr::from_bytes(name.to_bytes());
            if changed.is_none() && names.contains(name) {
                changed = Some(dir.join(name));
            }
        }
        changed
    }
}
