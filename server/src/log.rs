//! The server's own messages, one line each on its stderr.

/// Logs one server event.
pub fn event(message: &str) {
    eprintln!("warmfork-server: {message}");
}
