//! The driver's side of the control channel: binding the Unix socket in the data folder and
//! collecting one bounded request line per connection.
//!
//! Owns the socket file (stale-file removal, refusing to start over a live server, mode 0600)
//! and the line framing. What a request means and the reply text belong to the core
//! (`Server::handle_control`, `control`).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Longest request line accepted, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Reply sent when the request passes `MAX_REQUEST_BYTES`.
pub const TOO_LONG_REPLY: &str = "error: request too long\n";

/// Reply sent when the request is not UTF-8.
pub const NOT_UTF8_REPLY: &str = "error: request is not UTF-8\n";

/// Binds the control socket at `path`. A leftover file from a crashed run is removed; if a
/// server still answers there, start-up fails rather than stealing its socket.
pub fn bind(path: &Path, data_dir: &Path) -> io::Result<mio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another hearth is running with data_dir {} (control socket {} answers)",
                    data_dir.display(),
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot remove stale control socket {}: {e}", path.display()),
            )
        })?;
    }
    let listener = mio::net::UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind control socket {}: {e}", path.display()),
        )
    })?;
    // Only the server's own user may run account commands.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot restrict control socket {}: {e}", path.display()),
        )
    })?;
    Ok(listener)
}

/// What the reader has after taking some bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// No newline yet.
    Incomplete,
    /// A whole request (newline and a trailing `\r` removed).
    Line(String),
    /// The request passed `MAX_REQUEST_BYTES`.
    TooLong,
    /// The request is not UTF-8.
    NotUtf8,
}

/// Collects bytes up to the first newline, never holding more than `MAX_REQUEST_BYTES`.
/// Bytes after the newline are ignored: one request per connection.
#[derive(Default)]
pub struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing received yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn push(&mut self, bytes: &[u8]) -> LineStatus {
        let (part, complete) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (bytes.get(..i).unwrap_or_default(), true),
            None => (bytes, false),
        };
        if self.buf.len() + part.len() > MAX_REQUEST_BYTES {
            self.buf = Vec::new();
            return LineStatus::TooLong;
        }
        self.buf.extend_from_slice(part);
        if complete {
            self.finish()
        } else {
            LineStatus::Incomplete
        }
    }

    /// The peer closed its side: what was sent so far is the request.
    pub fn finish(&mut self) -> LineStatus {
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        match String::from_utf8(bytes) {
            Ok(s) => LineStatus::Line(s),
            Err(_) => LineStatus::NotUtf8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_in_pieces_completes_at_newline() {
        let mut r = LineReader::new();
        assert_eq!(r.push(b"user add "), LineStatus::Incomplete);
        assert_eq!(
            r.push(b"alice@localhost\r\nignored"),
            LineStatus::Line("user add alice@localhost".to_owned())
        );
    }

    #[test]
    fn partial_request_over_limit_too_long() {
        let mut r = LineReader::new();
        assert_eq!(r.push(&[b'a'; MAX_REQUEST_BYTES]), LineStatus::Incomplete);
        assert_eq!(r.push(b"a"), LineStatus::TooLong);
        assert!(r.buf.capacity() == 0);
    }

    #[test]
    fn partial_request_exactly_limit_accepted() {
        let mut r = LineReader::new();
        let mut bytes = vec![b'x'; MAX_REQUEST_BYTES];
        bytes.push(b'\n');
        match r.push(&bytes) {
            LineStatus::Line(s) => assert_eq!(s.len(), MAX_REQUEST_BYTES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_request_eof_finishes_line() {
        let mut r = LineReader::new();
        r.push(b"status");
        assert_eq!(r.finish(), LineStatus::Line("status".to_owned()));
    }

    #[test]
    fn empty_request_invalid_utf8_rejected() {
        let mut r = LineReader::new();
        assert_eq!(r.push(b"\xff\xfe\n"), LineStatus::NotUtf8);
    }

    #[test]
    fn stale_socket_file_bind_replaces_it() {
        let dir = std::env::temp_dir().join(format!("hearth-net-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        // A socket file nobody listens on, as left by a crash.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let listener = bind(&path, &dir).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn live_socket_bind_fails_naming_data_dir() {
        let dir = std::env::temp_dir().join(format!("hearth-net-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind(&path, &dir).unwrap_err();
        assert!(
            err.to_string().contains("another hearth is running"),
            "{err}"
        );
        assert!(err.to_string().contains(&dir.display().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
