//! A connection's output queue: wire bytes the socket did not take yet.
//!
//! Owns only the bytes and their order. The bound (`limits.max_outgoing_bytes`) is checked by
//! the caller with `len`; when the queue drains its allocation is freed, so an idle
//! connection costs no buffer memory.

use std::io::{self, Write};

/// Bytes waiting to be written, oldest first.
#[derive(Default)]
pub struct OutQueue {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    head: usize,
}

/// Once this many written bytes sit at the front, they are dropped on the next push.
const COMPACT_BYTES: usize = 16 * 1024;

impl OutQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of heap memory held.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.head >= COMPACT_BYTES && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Writes to `w` until the queue is empty or `w` would block; other errors are returned.
    /// Returns whether the queue is now empty. The loop ends because each round either writes
    /// at least one byte or returns.
    pub fn write_to<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<bool> {
        while self.head < self.buf.len() {
            match w.write(&self.buf[self.head..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.head += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // Drained: give the memory back.
        self.buf = Vec::new();
        self.head = 0;
        Ok(true)
    }
}

/// An `io::Write` that appends to an `OutQueue` (for `rustls::ServerConnection::write_tls`).
impl Write for OutQueue {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A socket that accepts `room` bytes, then says `WouldBlock`.
    pub(crate) struct Throttled {
        pub room: usize,
        pub written: Vec<u8>,
    }

    impl Write for Throttled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_blocked_socket_keeps_rest() {
        let mut q = OutQueue::new();
        q.push(b"hello world");
        let mut s = Throttled {
            room: 5,
            written: Vec::new(),
        };
        assert!(!q.write_to(&mut s).unwrap());
        assert_eq!(s.written, b"hello");
        assert_eq!(q.len(), 6);
        s.room = 100;
        assert!(q.write_to(&mut s).unwrap());
        assert_eq!(s.written, b"hello world");
    }

    #[test]
    fn queued_drained_frees_memory() {
        let mut q = OutQueue::new();
        q.push(&[7u8; 4096]);
        assert!(q.capacity() >= 4096);
        let mut s = Throttled {
            room: usize::MAX,
            written: Vec::new(),
        };
        assert!(q.write_to(&mut s).unwrap());
        assert_eq!(q.capacity(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn queued_push_after_partial_write_keeps_order() {
        let mut q = OutQueue::new();
        q.push(&[1u8; COMPACT_BYTES * 2]);
        let mut s = Throttled {
            room: COMPACT_BYTES + 10,
            written: Vec::new(),
        };
        assert!(!q.write_to(&mut s).unwrap());
        q.push(&[2u8; 3]);
        // The written front was compacted away; order is intact.
        assert!(q.head < COMPACT_BYTES);
        assert_eq!(q.len(), COMPACT_BYTES - 10 + 3);
        s.room = usize::MAX;
        assert!(q.write_to(&mut s).unwrap());
        assert_eq!(s.written.len(), COMPACT_BYTES * 2 + 3);
        assert_eq!(&s.written[COMPACT_BYTES * 2..], &[2, 2, 2]);
    }

    #[test]
    fn queued_broken_socket_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = OutQueue::new();
        q.push(b"x");
        assert_eq!(
            q.write_to(&mut Broken).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
