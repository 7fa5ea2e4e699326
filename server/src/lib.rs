//! `warmfork._native`: the fork server behind `warmfork.serve`.
//!
//! Python does the parts that are about Python (imports, warm-up, setting up
//! a worker's interpreter, the python-compatible handler); this extension
//! does the parts that must not depend on the interpreter's cooperation:
//! the socket, the event loop, reading untrusted requests, and forking.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

mod arenas;
mod codepack;
mod descriptors;
mod ended;
mod fastbins;
mod handover;
mod hugepages;
mod immortal;
mod incoming;
mod limits;
mod listener;
mod log;
mod maps;
mod modules;
mod path0;
mod pool;
mod pools;
mod prefault;
mod reload;
mod run_flags;
mod server;
mod shutdown;
mod sigmask;
mod source_file;
mod terminal_input;
mod watch;
mod worker;

/// Serialises the unit tests that look at this process's mappings or at
/// which of its pages it owns alone, and those that change either (mapping
/// memory, forking): run from another test thread at the same time, one
/// would change what the other sees.
#[cfg(test)]
fn memory_layout_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The socket path the shared rule picks for server `name` from this
/// process's environment (see `warmfork::socket_path`).
#[pyfunction]
#[pyo3(signature = (name = None))]
fn socket_path(name: Option<&[u8]>) -> PyResult<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use warmfork::socket_path as rule;
    let var = |key| std::env::var_os(key).map(OsStringExt::into_vec);
    let (explicit, runtime) = (var("WARMFORK_SOCKET"), var("XDG_RUNTIME_DIR"));
    let inputs = rule::Inputs {
        warmfork_socket: explicit.as_deref(),
        xdg_runtime_dir: runtime.as_deref(),
        uid: rustix::process::getuid().as_raw(),
        name: name.unwrap_or(rule::DEFAULT_NAME),
    };
    let mut out = [0; rule::MAX_SOCKET_PATH_LEN];
    let len = rule::socket_path(&inputs, &mut out).map_err(|_| {
        let source = if explicit.as_deref().is_some_and(|path| !path.is_empty()) {
            "WARMFORK_SOCKET"
        } else {
            "the socket path under XDG_RUNTIME_DIR"
        };
        PyValueError::new_err(format!(
            "{source} is longer than the 107 bytes a Unix socket allows; \
             set WARMFORK_SOCKET to a shorter path, or pass --socket"
        ))
    })?;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&out[..len])))
}

/// Makes the warm heap cheap to share with workers: empties glibc's fast
/// bins and keeps them off (see `fastbins.rs`), then, with `collapse`,
/// moves the fully resident parts of large anonymous mappings onto huge
/// pages so that forks stay cheap (see `hugepages.rs`). Returns the bytes
/// moved onto huge pages and the milliseconds that took.
#[pyfunction]
fn prepare_heap(py: Python<'_>, collapse: bool) -> (usize, u128) {
    fastbins::stop();
    if !collapse {
        return (0, 0);
    }
    let done = py.detach(hugepages::collapse);
    (done.bytes, done.millis)
}

/// Puts the arenas pymalloc makes from now on side by side, in a region of
/// address space of their own, so that [`serve`] can move them onto huge
/// pages (see `arenas.rs`).
#[pyfunction]
fn place_arenas() {
    arenas::place();
}

/// Makes sure the directory of the socket `path` is this user's alone,
/// creating it (the last level only) if need be, as the server does before
/// it binds; raises `OSError` saying why not. `--daemon` calls it before it
/// opens its log beside the socket.
#[pyfunction]
fn private_socket_dir(path: PathBuf) -> PyResult<()> {
    listener::private_socket_dir(&path)
        .map(drop)
        .map_err(PyOSError::new_err)
}

/// A listening socket, bound and locked; see `listener.rs`.
#[pyclass(module = "warmfork._native")]
struct Listener {
    inner: Option<listener::Listener>,
}

#[pymethods]
impl Listener {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let inner = listener::Listener::bind(&path).map_err(PyOSError::new_err)?;
        Ok(Listener { inner: Some(inner) })
    }

    /// Takes over the listening socket systemd passed as descriptor `fd`
    /// (socket activation).
    #[staticmethod]
    #[pyo3(signature = (fd, lock_fd = None, path = None, owns_file = true))]
    fn inherit(
        fd: i32,
        lock_fd: Option<i32>,
        path: Option<PathBuf>,
        owns_file: bool,
    ) -> PyResult<Self> {
        let inner = listener::Listener::inherit(fd, lock_fd, path.as_deref(), owns_file)
            .map_err(PyOSError::new_err)?;
        Ok(Listener { inner: Some(inner) })
    }

    /// The socket's path.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.as_ref().map(|l| l.path().to_owned())
    }

    /// Removes the socket (if it is still ours) and closes it.
    fn close(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.remove();
        }
    }
}

/// Serves `listener` until a signal handler raises (Ctrl-C raises
/// `KeyboardInterrupt`), or, after handing the socket to a fresh server,
/// until its own runs have ended (then it returns).
///
/// `pool` workers are kept forked in advance; each has called `prepare()`
/// and runs one request by `run(handler, argv, env, umask,
/// ignored_signals, client_pid)`. `wakeup_fd` is the read end of the pipe
/// given to `signal.set_wakeup_fd`, which the loop watches so no signal
/// waits. When `watch` (files) and `restart` (this server's command line)
/// are given, a change to one of the files hands the socket to a fresh
/// server started with that command line, which has `ready_timeout`
/// seconds to warm up (see `reload.rs`). A server started that way reports
/// ready on `ready_fd` before it serves; the descriptor is closed in any case.
/// Workers close `inherited_fds`, the descriptors the server process was
/// started with, before the program runs. `changed` is a watched file that
/// changed while the server warmed up: the server replaces itself at once.
/// `fill_pools` takes the free blocks of pymalloc's half-used pools (see
/// `pools.rs`), then `huge_pages` moves the stretches of the heap that are
/// fully resident only since [`prepare_heap`] moved the others onto huge
/// pages (see `hugepages.rs`).
#[pyfunction]
#[pyo3(signature = (listener, handler, *, prepare, run, pool = 4, request_timeout = 10.0, grace = 10.0, wakeup_fd = None, watch = Vec::new(), restart = Vec::new(), ready_timeout = 60.0, ready_fd = None, inherited_fds = Vec::new(), changed = None, fill_pools = false, huge_pages = false, before_fork = None))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    listener: PyRef<'_, Listener>,
    handler: Bound<'_, PyAny>,
    prepare: Bound<'_, PyAny>,
    run: Bound<'_, PyAny>,
    pool: usize,
    request_timeout: f64,
    grace: f64,
    wakeup_fd: Option<i32>,
    watch: Vec<PathBuf>,
    restart: Vec<PathBuf>,
    ready_timeout: f64,
    ready_fd: Option<i32>,
    inherited_fds: Vec<i32>,
    changed: Option<PathBuf>,
    fill_pools: bool,
    huge_pages: bool,
    before_fork: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    // SAFETY: Python hands the descriptor over, whatever happens next.
    let ready = ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let inner = listener
        .inner
        .as_ref()
        .ok_or_else(|| PyValueError::new_err("the listener is closed"))?;
    let request_timeout = seconds(request_timeout, "request_timeout")?;
    let hooks = worker::Hooks {
        handler: &handler,
        prepare: &prepare,
        run: &run,
        before_fork: before_fork.as_ref(),
    };
    let watcher = if watch.is_empty() || restart.is_empty() {
        None
    } else {
        // Watching is a convenience: a server that cannot watch serves anyway.
        match watch::Watcher::new(watch) {
            Ok((watcher, count)) => {
                log::info(&format!(
                    "watching {count} files of the loaded code for changes"
                ));
                if let Some(why) = watcher.unwatched() {
                    log::warning(why);
                }
                Some(watcher)
            }
            Err((_, why)) => {
                log::warning(&format!(
                    "{why}; serving without reloading: edits do not take effect until the server is restarted"
                ));
                None
            }
        }
    };
    let reload = if let Some(watcher) = watcher {
        let restart = restart
            .iter()
            .map(|arg| CString::new(arg.as_os_str().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| PyValueError::new_err("the restart command line holds a NUL byte"))?;
        let ready_timeout = seconds(ready_timeout, "ready_timeout")?;
        if let Some(file) = &changed {
            log::info(&format!(
                "{} changed while this server warmed up: replacing it before it serves",
                file.display()
            ));
        }
        Some(reload::Reload::new(
            watcher,
            restart,
            ready_timeout,
            changed,
        ))
    } else {
        None
    };
    // Last, so that no object made for serving starts a half-used pool.
    if fill_pools {
        let filled = pools::fill();
        let (blocks, kib) = (filled.blocks, filled.bytes >> 10);
        match filled.stopped {
            None => log::info(&format!(
                "filled the allocator's half-used pools ({blocks} blocks, {kib} KiB), so that runs allocate on pages of their own"
            )),
            Some(why) => log::warning(&format!(
                "filled the allocator's half-used pools only in part ({blocks} blocks, {kib} KiB): {why}"
            )),
        }
    }
    if huge_pages {
        let done = py.detach(hugepages::collapse);
        if done.bytes > 0 {
            log::info(&format!(
                "moved {} MiB more of the warm heap onto huge pages, resident since, in {} ms",
                done.bytes >> 20,
                done.millis
            ));
        }
    }
    server::serve(
        py,
        inner,
        hooks,
        server::Settings {
            request_timeout,
            pool,
            wakeup: wakeup_fd,
            grace: seconds(grace, "grace")?,
        },
        reload,
        ready,
        inherited_fds,
    )
}

fn seconds(value: f64, name: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a number of seconds, 0 or more"))
    })
}

/// Raises this process's soft limit on open descriptors to its hard one:
/// see `limits::raise_descriptor_limit`.
#[pyfunction]
fn raise_descriptor_limit() {
    limits::raise_descriptor_limit();
}

/// Sets the server log's level: `error`, `warning`, `info` or `debug`.
#[pyfunction]
fn set_log_level(level: &str) -> PyResult<()> {
    let level = log::Level::parse(level).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown log level {level:?}; use error, warning, info or debug"
        ))
    })?;
    log::set_level(level);
    Ok(())
}

/// Writes one line to the server log, if `level` is enabled. A path that
/// is not UTF-8 (its bytes surrogate-escaped, as `os.fsdecode` gives it)
/// is written with those bytes as `\xNN`.
#[pyfunction(name = "log")]
fn log_line(level: &str, message: &Bound<'_, PyString>) -> PyResult<()> {
    let level = log::Level::parse(level)
        .ok_or_else(|| PyValueError::new_err(format!("unknown log level {level:?}")))?;
    if let Ok(text) = message.to_str() {
        log::log(level, text);
        return Ok(());
    }
    let bytes = message
        .call_method1("encode", ("utf-8", "surrogateescape"))
        .or_else(|_| message.call_method1("encode", ("utf-8", "backslashreplace")))?;
    let mut text = String::new();
    for chunk in bytes.extract::<&[u8]>()?.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    log::log(level, &text);
    Ok(())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(socket_path, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(prepare_heap, m)?)?;
    m.add_function(wrap_pyfunction!(place_arenas, m)?)?;
    m.add_function(wrap_pyfunction!(immortal::immortalize, m)?)?;
    m.add_function(wrap_pyfunction!(pools::fill_pools, m)?)?;
    m.add_function(wrap_pyfunction!(pools::allocator_name, m)?)?;
    m.add_function(wrap_pyfunction!(codepack::pack, m)?)?;
    m.add_function(wrap_pyfunction!(private_socket_dir, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(raise_descriptor_limit, m)?)?;
    m.add_function(wrap_pyfunction!(log_line, m)?)?;
    m.add_class::<Listener>()?;
    m.add_class::<modules::ModuleNames>()?;
    m.add_function(wrap_pyfunction!(terminal_input::guard_input, m)?)?;
    m.add_function(wrap_pyfunction!(terminal_input::input, m)?)?;
    m.add_function(wrap_pyfunction!(source_file::run_source_file, m)?)?;
    m.add_function(wrap_pyfunction!(run_flags::utf8_mode_settable, m)?)?;
    m.add_function(wrap_pyfunction!(run_flags::set_utf8_mode, m)?)?;
    m.add_function(wrap_pyfunction!(run_flags::set_flags, m)?)?;
    m.add_function(wrap_pyfunction!(path0::set_sys_path_0, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown::refuse_at_shutdown, m)?)?;
    path0::prove(m.py());
    Ok(())
}
