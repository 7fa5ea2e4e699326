//! Noticing that code the server has loaded changed on disk.
//!
//! The server watches the directories of every module it imported and of
//! its warm-up file with inotify, and keeps, per directory, the names that
//! matter. Editors either rewrite a file in place (`CLOSE_WRITE`) or write
//! a new one and rename it over the old (`MOVED_TO`); both are caught, as are
//! deletions. Python's own byte-code caches live in `__pycache__`, a
//! directory that is not watched.
//!
//! An installer may move a whole directory aside and write a new one in its
//! place (pip does): the watch follows the old directory, so its move is a
//! change too, and [`Watcher::rewatch`] watches the directories again by
//! their names. Because events alone cannot say when an install is over,
//! [`Snapshot`] records what the files are (identity, size, time of last
//! change, or missing) so the caller can wait until they stop changing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// Watches for changes to a set of files.
#[derive(Debug)]
pub struct Watcher {
    /// The files watched.
    files: Vec<PathBuf>,
    inotify: OwnedFd,
    /// Per watch descriptor: its directory and the names watched in it.
    dirs: HashMap<i32, (PathBuf, HashSet<OsString>)>,
    /// Why some files are not watched, if some are not.
    unwatched: Option<String>,
}

impl Watcher {
    /// Starts watching `files`. Files in directories that cannot be watched
    /// are skipped (the count of watched files is returned with it; see
    /// [`Watcher::unwatched`]). Fails, giving back `files`, when no watching
    /// is possible at all.
    pub fn new(files: Vec<PathBuf>) -> Result<(Watcher, usize), (Vec<PathBuf>, String)> {
        let inotify = match inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
            Ok(inotify) => inotify,
            Err(e) => {
                let hint = if e == rustix::io::Errno::MFILE {
                    " (the limit of inotify instances is reached: raise it with \
                     sysctl fs.inotify.max_user_instances=...)"
                } else {
                    ""
                };
                return Err((files, format!("cannot watch for changed files: {e}{hint}")));
            }
        };
        // The `_SELF` events are the directory's own: moved aside or removed.
        let mask = WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::MOVE_SELF
            | WatchFlags::DELETE_SELF;
        let mut dirs: HashMap<i32, (PathBuf, HashSet<OsString>)> = HashMap::new();
        let mut watched = 0;
        let mut failed: Option<(PathBuf, rustix::io::Errno)> = None;
        let mut skipped = 0;
        for file in &files {
            let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let wd = match inotify::add_watch(&inotify, dir, mask) {
                Ok(wd) => wd,
                Err(e) => {
                    failed.get_or_insert_with(|| (dir.to_owned(), e));
                    skipped += 1;
                    continue;
                }
            };
            dirs.entry(wd)
                .or_insert_with(|| (dir.to_owned(), HashSet::new()))
                .1
                .insert(name.to_owned());
            watched += 1;
        }
        // Said, not only skipped: an edit there would go unnoticed, and the
        // one who edits cannot tell why.
        let unwatched = failed.map(|(dir, e)| {
            let hint = if e == rustix::io::Errno::NOSPC {
                " (the limit of inotify watches, /proc/sys/fs/inotify/max_user_watches, is reached: \
                 raise it with sysctl fs.inotify.max_user_watches=...)"
            } else {
                ""
            };
            format!(
                "cannot watch {skipped} of the {} files of the loaded code (first {}: {e}){hint}; \
                 edits to them do not take effect until the server is restarted",
                files.len(),
                dir.display()
            )
        });
        Ok((
            Watcher {
                files,
                inotify,
                dirs,
                unwatched,
            },
            watched,
        ))
    }

    /// Why some of the files are not watched, if some are not.
    pub fn unwatched(&self) -> Option<&str> {
        self.unwatched.as_deref()
    }

    /// Watches the same files again, by their names: a directory replaced
    /// since (moved aside and written anew) is watched where it is now.
    /// When that is not possible at all, the watch goes on as it was.
    pub fn rewatch(&mut self) -> Result<(), String> {
        match Watcher::new(std::mem::take(&mut self.files)) {
            Ok((fresh, _)) => *self = fresh,
            Err((files, message)) => {
                self.files = files;
                return Err(message);
            }
        }
        self.unwatched().map_or(Ok(()), |why| Err(why.to_owned()))
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads the pending events and returns a watched file (or directory)
    /// that changed, if any did.
    pub fn changed(&mut self) -> Option<PathBuf> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        let mut changed = None;
        while let Ok(event) = reader.next() {
            if changed.is_some() {
                continue; // draining
            }
            if event.events().contains(ReadFlags::QUEUE_OVERFLOW) {
                // Events were lost; any file may have changed.
                changed = self.files.first().cloned();
                continue;
            }
            let Some((dir, names)) = self.dirs.get(&event.wd()) else {
                continue;
            };
            if event
                .events()
                .intersects(ReadFlags::MOVE_SELF | ReadFlags::DELETE_SELF)
            {
                changed = Some(dir.clone());
                continue;
            }
            let Some(name) = event.file_name() else {
                continue;
            };
            let name = std::ffi::OsStr::from_bytes(name.to_bytes());
            if names.contains(name) {
                changed = Some(dir.join(name));
            }
        }
        changed
    }

    /// What the watched files are now (a symbolic link among them is the
    /// link itself: a deploy that points it elsewhere changes it).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.files
                .iter()
                .map(|file| {
                    std::fs::symlink_metadata(file).ok().map(|m| {
                        let changed = (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
                        (m.dev(), m.ino(), m.size(), changed)
                    })
                })
                .collect(),
        )
    }

    /// The first watched file that differs between two snapshots.
    pub fn difference(&self, before: &Snapshot, after: &Snapshot) -> Option<&Path> {
        self.files
            .iter()
            .zip(before.0.iter().zip(&after.0))
            .find(|(_, (before, after))| before != after)
            .map(|(file, _)| file.as_path())
    }
}

/// What each watched file was at one moment: device, inode, size and the
/// times of its last changes, or `None` where it was missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot(Vec<Option<FileState>>);

type FileState = (u64, u64, u64, (i64, i64, i64, i64));

impl Snapshot {
    /// Whether every watched file existed.
    pub fn complete(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warmfork-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_moved_aside_is_a_change_and_its_replacement_is_watched_after_rewatch() {
        let root = temp_dir("moved");
        let package = root.join("pkg");
        std::fs::create_dir(&package).unwrap();
        let module = package.join("mod.py");
        std::fs::write(&module, "A = 1\n").unwrap();
        let (mut watcher, count) = Watcher::new(vec![module.clone()]).unwrap();
        assert_eq!(count, 1);
        let before = watcher.snapshot();
        assert!(before.complete());

        std::fs::rename(&package, root.join("stash")).unwrap();
        assert_eq!(watcher.changed(), Some(package.clone()));
        assert!(!watcher.snapshot().complete());

        std::fs::create_dir(&package).unwrap();
        std::fs::write(&module, "A = 2\n").unwrap();
        let after = watcher.snapshot();
        assert_eq!(watcher.difference(&before, &after), Some(module.as_path()));

        watcher.rewatch().unwrap();
        assert_eq!(watcher.changed(), None);
        std::fs::write(&module, "A = 3\n").unwrap();
        assert_eq!(watcher.changed(), Some(module));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unchanged_files_give_equal_snapshots() {
        let root = temp_dir("same");
        let module = root.join("mod.py");
        std::fs::write(&module, "A = 1\n").unwrap();
        let (watcher, _) = Watcher::new(vec![module]).unwrap();
        let first = watcher.snapshot();
        assert_eq!(watcher.difference(&first, &watcher.snapshot()), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
