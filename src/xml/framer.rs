//! Byte-level framing of an XMPP stream: cuts the input into complete frames before any
//! tokenizer sees it.
//!
//! Owns: the receive buffer, the scan position (each byte is looked at once, so feeding a
//! stanza one byte at a time costs the same as feeding it whole), UTF-8 validation as bytes
//! are scanned, the early refusals of RFC 6120 §11.1 (comments, PIs, DTDs are refused at
//! their first bytes) and the size and depth limits, which are enforced while a frame is
//! still incomplete.
//! Leaves to others: tokenizing a frame, namespaces and entities (`xml::tree`), and turning
//! frames into events (`xml::parser`).
//!
//! Frames are: the XML declaration (`<?xml ...?>`, only before a stream header), the stream
//! header (an open tag that stays open), each complete top-level element, and the stream
//! close tag. xmlparser is only given complete frames because it cannot tell `<mess`
//! (truncated) from an element named `mess`.

use super::parser::XmlError;

/// What a complete frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// `<?xml version='1.0'?>` before a stream header.
    Decl,
    /// The stream header open tag `<stream:stream ...>`.
    Header,
    /// A self-closed header `<stream:stream .../>`: an open immediately followed by a close.
    HeaderEmpty,
    /// A complete top-level element.
    Element,
    /// The top-level end tag `</stream:stream>`.
    Close,
}

/// A complete frame: `buf[start..end]`. Valid until the next `push`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub kind: FrameKind,
    pub start: usize,
    pub end: usize,
}

/// Where in the stream the framer is, between frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before the stream header; `decl_allowed` until an XML declaration was seen.
    Prolog { decl_allowed: bool },
    /// Inside the stream root: top-level elements, whitespace, or the close tag.
    Stream,
    /// The stream close was cut; nothing more is read.
    Closed,
}

/// The lexical state of the byte scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Between frames.
    Top,
    /// Just after `<`.
    Lt,
    /// After `<?`, having matched this many bytes of `xml`.
    Pi(u8),
    /// Inside the XML declaration.
    PiBody,
    /// Inside the XML declaration, just after `?`.
    PiQuestion,
    /// After `<!`, having matched this many bytes of `[CDATA[`.
    Bang(u8),
    CData,
    /// Inside CDATA after this many (1 or 2) `]`.
    CDataBracket(u8),
    /// Inside a start tag, outside quotes.
    StartTag,
    /// Inside a start tag just after `/`.
    StartTagSlash,
    /// Inside a quoted attribute value; the byte is the quote.
    AttrValue(u8),
    /// Inside an end tag.
    EndTag,
    /// Character data inside an element.
    Text,
}

/// What one byte did.
enum Step {
    /// Top-level whitespace (or a byte of nothing): consumed, no frame open.
    Idle,
    /// The byte opened a frame.
    Open,
    /// The byte is inside the current frame.
    Inside,
    /// The byte completed a frame of this kind.
    Done(FrameKind),
}

const CDATA_OPEN: &[u8] = b"[CDATA[";

/// RFC 6120 §11.1 and XML 1.0 §2.2: no control characters other than tab, CR, LF, anywhere
/// in the stream.
fn is_forbidden_control(b: u8) -> bool {
    b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A plausible first byte of an XML name; xmlparser checks names fully later. Bytes from
/// 0x80 start multi-byte characters, many of which are name characters.
fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
}

/// The byte-level state machine, kept apart from the buffer so that the scan loop can borrow
/// the buffer while stepping.
struct Scanner {
    lex: Lex,
    phase: Phase,
    /// Elements open within the current top-level frame.
    depth: usize,
    /// The kind of frame being cut.
    kind: FrameKind,
    max_depth: usize,
}

impl Scanner {
    /// How many leading bytes of `rest` are plain text or attribute value: bytes `step` would
    /// only count as `Inside`.
    fn plain_run(&self, rest: &[u8]) -> usize {
        let end = match self.lex {
            Lex::Text => rest
                .iter()
                .position(|&b| b == b'<' || is_forbidden_control(b)),
            Lex::AttrValue(quote) => rest
                .iter()
                .position(|&b| b == quote || b == b'<' || is_forbidden_control(b)),
            _ => return 0,
        };
        end.unwrap_or(rest.len())
    }

    fn step(&mut self, b: u8) -> Result<Step, XmlError> {
        // Checked here so that even text is refused at once.
        if is_forbidden_control(b) {
            return Err(XmlError::NotWellFormed("control character"));
        }
        match self.lex {
            Lex::Top => self.top(b),
            Lex::Lt => self.after_lt(b).map(|()| Step::Inside),
            Lex::Pi(n) => {
                // Only the XML declaration is allowed: `<?xml` followed by whitespace.
                let matched = usize::from(n);
                match b"xml".get(matched) {
                    Some(&want) if b == want => self.lex = Lex::Pi(n + 1),
                    None if is_xml_space(b) => self.lex = Lex::PiBody,
                    _ => return Err(XmlError::Restricted("processing instruction")),
                }
                Ok(Step::Inside)
            }
            Lex::PiBody => {
                if b == b'?' {
                    self.lex = Lex::PiQuestion;
                } else if b == b'<' {
                    return Err(XmlError::NotWellFormed("'<' in XML declaration"));
                }
                Ok(Step::Inside)
            }
            Lex::PiQuestion => match b {
                b'>' => {
                    self.lex = Lex::Top;
                    self.phase = Phase::Prolog {
                        decl_allowed: false,
                    };
                    Ok(Step::Done(FrameKind::Decl))
                }
                b'?' => Ok(Step::Inside),
                b'<' => Err(XmlError::NotWellFormed("'<' in XML declaration")),
                _ => {
                    self.lex = Lex::PiBody;
                    Ok(Step::Inside)
                }
            },
            Lex::Bang(n) => self.bang(b, n).map(|()| Step::Inside),
            Lex::CData => {
                if b == b']' {
                    self.lex = Lex::CDataBracket(1);
                }
                Ok(Step::Inside)
            }
            Lex::CDataBracket(n) => {
                self.lex = match b {
                    b']' => Lex::CDataBracket(2),
                    b'>' if n >= 2 => Lex::Text,
                    _ => Lex::CData,
                };
                Ok(Step::Inside)
            }
            Lex::StartTag => match b {
                b'\'' | b'"' => {
                    self.lex = Lex::AttrValue(b);
                    Ok(Step::Inside)
                }
                b'<' => Err(XmlError::NotWellFormed("'<' in start tag")),
                b'/' => {
                    self.lex = Lex::StartTagSlash;
                    Ok(Step::Inside)
                }
                b'>' => Ok(self.start_tag_closed(false)),
                _ => Ok(Step::Inside),
            },
            Lex::StartTagSlash => match b {
                b'>' => Ok(self.start_tag_closed(true)),
                _ => Err(XmlError::NotWellFormed("'/' in start tag")),
            },
            Lex::AttrValue(quote) => {
                if b == quote {
                    self.lex = Lex::StartTag;
                } else if b == b'<' {
                    // XML 1.0 §3.1 [10]: AttValue excludes '<'.
                    return Err(XmlError::NotWellFormed("'<' in attribute value"));
                }
                Ok(Step::Inside)
            }
            Lex::EndTag => match b {
                b'>' => Ok(self.end_tag_closed()),
                b'<' | b'\'' | b'"' => Err(XmlError::NotWellFormed("bad end tag")),
                _ => Ok(Step::Inside),
            },
            Lex::Text => {
                if b == b'<' {
                    self.lex = Lex::Lt;
                }
                Ok(Step::Inside)
            }
        }
    }

    fn top(&mut self, b: u8) -> Result<Step, XmlError> {
        if is_xml_space(b) {
            // Whitespace keepalives between stanzas (RFC 6120 §4.6.1), and whitespace
            // around the header.
            return Ok(Step::Idle);
        }
        if b == b'<' {
            self.lex = Lex::Lt;
            self.depth = 0;
            return Ok(Step::Open);
        }
        Err(match self.phase {
            Phase::Prolog { .. } => XmlError::NotWellFormed("not XML"),
            _ => XmlError::NotWellFormed("text outside a stanza"),
        })
    }

    fn after_lt(&mut self, b: u8) -> Result<(), XmlError> {
        let top_level = self.depth == 0;
        match b {
            b'?' => match self.phase {
                Phase::Prolog { decl_allowed: true } if top_level => {
                    self.kind = FrameKind::Decl;
                    self.lex = Lex::Pi(0);
                }
                _ => return Err(XmlError::Restricted("processing instruction")),
            },
            b'!' => self.lex = Lex::Bang(0),
            b'/' => {
                if top_level {
                    match self.phase {
                        Phase::Stream => self.kind = FrameKind::Close,
                        _ => return Err(XmlError::NotWellFormed("end tag before stream header")),
                    }
                }
                self.lex = Lex::EndTag;
            }
            b if is_name_start(b) => {
                if top_level {
                    self.kind = match self.phase {
                        Phase::Stream => FrameKind::Element,
                        _ => FrameKind::Header,
                    };
                }
                // The stanza is depth 1; the header does not count.
                if self.kind != FrameKind::Header && self.depth >= self.max_depth {
                    return Err(XmlError::LimitExceeded("element nesting too deep"));
                }
                self.lex = Lex::StartTag;
            }
            _ => return Err(XmlError::NotWellFormed("bad character after '<'")),
        }
        Ok(())
    }

    fn bang(&mut self, b: u8, matched: u8) -> Result<(), XmlError> {
        if matched == 0 {
            match b {
                // RFC 6120 §11.1: comments, DTDs and entity declarations are refused at
                // their first bytes, before any of their content is buffered.
                b'-' => return Err(XmlError::Restricted("comment")),
                b'[' if self.depth > 0 => {}
                b'[' => return Err(XmlError::NotWellFormed("CDATA outside an element")),
                _ => return Err(XmlError::Restricted("DTD or markup declaration")),
            }
        }
        let next = usize::from(matched);
        match CDATA_OPEN.get(next) {
            Some(&want) if b == want => {
                if next + 1 == CDATA_OPEN.len() {
                    self.lex = Lex::CData;
                } else {
                    self.lex = Lex::Bang(matched + 1);
                }
                Ok(())
            }
            _ => Err(XmlError::NotWellFormed("bad markup after '<!'")),
        }
    }

    /// `>` ended a start tag (`empty`: it was `/>`).
    fn start_tag_closed(&mut self, empty: bool) -> Step {
        if self.kind == FrameKind::Header {
            self.lex = Lex::Top;
            if empty {
                self.phase = Phase::Closed;
                return Step::Done(FrameKind::HeaderEmpty);
            }
            self.phase = Phase::Stream;
            return Step::Done(FrameKind::Header);
        }
        if !empty {
            self.depth += 1;
        }
        if self.depth == 0 {
            self.lex = Lex::Top;
            Step::Done(FrameKind::Element)
        } else {
            self.lex = Lex::Text;
            Step::Inside
        }
    }

    fn end_tag_closed(&mut self) -> Step {
        if self.kind == FrameKind::Close {
            self.lex = Lex::Top;
            self.phase = Phase::Closed;
            return Step::Done(FrameKind::Close);
        }
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            self.lex = Lex::Top;
            Step::Done(FrameKind::Element)
        } else {
            self.lex = Lex::Text;
            Step::Inside
        }
    }
}

/// The receive buffer and the frames found in it.
pub(crate) struct Framer {
    buf: Vec<u8>,
    /// Bytes before this are consumed (returned as frames or skipped as whitespace).
    pos: usize,
    /// Bytes before this have been stepped through the scanner.
    scan: usize,
    /// Bytes before this are known to be valid UTF-8.
    utf8_pos: usize,
    /// Start of the frame being cut (meaningful while the scanner is inside one).
    frame_start: usize,
    in_frame: bool,
    /// A complete frame not yet taken; scanning stops until it is.
    pending: Option<Frame>,
    scanner: Scanner,
    max_frame_bytes: usize,
}

/// Capacity above which an emptied buffer is not worth keeping around.
const KEEP_CAPACITY: usize = 4096;

impl Framer {
    pub(crate) fn new(max_frame_bytes: usize, max_depth: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            utf8_pos: 0,
            frame_start: 0,
            in_frame: false,
            pending: None,
            scanner: Scanner {
                lex: Lex::Top,
                phase: Phase::Prolog { decl_allowed: true },
                depth: 0,
                kind: FrameKind::Element,
                max_depth,
            },
            max_frame_bytes,
        }
    }

    /// Appends bytes and scans them as far as the next complete frame. Input after the
    /// stream close is dropped.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), XmlError> {
        if self.scanner.phase == Phase::Closed {
            return Ok(());
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        if self.pending.is_some() {
            // The caller has not taken the frame yet; what follows is unscanned. It may be
            // TLS after `<starttls/>`, so it is not looked at, only bounded.
            if self.buf.len().saturating_sub(self.pos) > self.max_frame_bytes.saturating_mul(2) {
                return Err(XmlError::LimitExceeded("input not drained"));
            }
            return Ok(());
        }
        self.scan()
    }

    /// The next complete frame, consuming it. Its bytes stay readable via `bytes` until the
    /// next `push`, `restart`, `take_unparsed` or `release_if_idle`.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, XmlError> {
        if self.pending.is_none() {
            self.scan()?;
        }
        let frame = self.pending.take();
        if let Some(f) = frame {
            self.pos = f.end;
        }
        Ok(frame)
    }

    /// The bytes of a frame returned by `next_frame`.
    pub(crate) fn bytes(&self, frame: &Frame) -> &[u8] {
        self.buf.get(frame.start..frame.end).unwrap_or(&[])
    }

    /// Bytes held that are not consumed yet.
    pub(crate) fn buffered_len(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Capacity of the receive buffer, to check that idle parsers hold none.
    #[cfg(test)]
    pub(crate) fn held_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forgets the stream context (a new header is expected, optionally preceded by an XML
    /// declaration) and rescans the unconsumed bytes under it.
    pub(crate) fn restart(&mut self) {
        self.scan = self.pos;
        self.utf8_pos = self.pos;
        self.in_frame = false;
        self.pending = None;
        self.scanner.lex = Lex::Top;
        self.scanner.depth = 0;
        self.scanner.phase = Phase::Prolog { decl_allowed: true };
        self.release_if_idle();
    }

    /// Takes the unconsumed bytes and restarts.
    pub(crate) fn take_unparsed(&mut self) -> Vec<u8> {
        let rest = self
            .buf
            .get(self.pos..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.buf = Vec::new();
        self.pos = 0;
        self.restart();
        rest
    }

    /// Drops every byte held (after the stream close, or an error).
    pub(crate) fn clear(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
        self.scan = 0;
        self.utf8_pos = 0;
        self.frame_start = 0;
        self.in_frame = false;
        self.pending = None;
    }

    /// Frees the buffer once everything in it is consumed, so that an idle connection holds
    /// no receive memory.
    pub(crate) fn release_if_idle(&mut self) {
        if self.pos >= self.buf.len() && self.pending.is_none() && !self.in_frame {
            self.clear();
        }
    }

    /// Moves unconsumed bytes to the front. Called only before appending, so its cost is at
    /// most the unconsumed tail, once per `push`.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        let n = self.pos.min(self.buf.len());
        self.buf.drain(..n);
        self.pos -= n;
        self.scan = self.scan.saturating_sub(n);
        self.utf8_pos = self.utf8_pos.saturating_sub(n);
        self.frame_start = self.frame_start.saturating_sub(n);
        if let Some(f) = &mut self.pending {
            f.start = f.start.saturating_sub(n);
            f.end = f.end.saturating_sub(n);
        }
        // A big stanza leaves a big allocation behind; do not keep it for small ones.
        if self.buf.capacity() > KEEP_CAPACITY && self.buf.capacity() > 4 * self.buf.len() {
            self.buf.shrink_to(self.buf.len().max(KEEP_CAPACITY));
        }
    }

    /// Steps the scanner over unscanned bytes until a frame completes or input runs out.
    fn scan(&mut self) -> Result<(), XmlError> {
        if self.pending.is_some() || self.scanner.phase == Phase::Closed {
            return Ok(());
        }
        let mut i = self.scan;
        let mut done = None;
        // Each round consumes at least one byte.
        while let Some(rest) = self.buf.get(i..).filter(|r| !r.is_empty()) {
            // Fast path: a run of plain text or attribute value changes no state (in a frame,
            // so only the size limit applies, checked before the run's end byte is stepped).
            let run = self.scanner.plain_run(rest);
            i += run;
            let Some(&b) = rest.get(run) else {
                if i.saturating_sub(self.frame_start) > self.max_frame_bytes {
                    return Err(XmlError::LimitExceeded("stanza too large"));
                }
                break;
            };
            let step = self.scanner.step(b);
            i += 1;
            match step? {
                Step::Idle => {
                    if !self.in_frame {
                        self.pos = i;
                    }
                }
                Step::Open => {
                    self.in_frame = true;
                    self.frame_start = i - 1;
                }
                Step::Inside => {}
                Step::Done(kind) => {
                    self.in_frame = false;
                    done = Some(Frame {
                        kind,
                        start: self.frame_start,
                        end: i,
                    });
                }
            }
            // Refuse an oversized frame as soon as it passes the limit, not when it ends.
            if (self.in_frame || done.is_some())
                && i.saturating_sub(self.frame_start) > self.max_frame_bytes
            {
                return Err(XmlError::LimitExceeded("stanza too large"));
            }
            if done.is_some() {
                break;
            }
        }
        self.scan = i;
        self.check_utf8()?;
        self.pending = done;
        Ok(())
    }

    /// Validates the scanned bytes as UTF-8, leaving an incomplete trailing sequence (a
    /// character split across reads) for the next call.
    fn check_utf8(&mut self) -> Result<(), XmlError> {
        let chunk = self.buf.get(self.utf8_pos..self.scan).unwrap_or(&[]);
        let valid = match std::str::from_utf8(chunk) {
            Ok(s) => s,
            Err(e) => {
                if e.error_len().is_some() {
                    return Err(XmlError::BadEncoding);
                }
                // The prefix is valid by the error's own account.
                let prefix = chunk.get(..e.valid_up_to()).unwrap_or(&[]);
                std::str::from_utf8(prefix).map_err(|_| XmlError::BadEncoding)?
            }
        };
        // XML 1.0 §2.2: U+FFFE and U+FFFF are not characters.
        if valid.contains(['\u{FFFE}', '\u{FFFF}']) {
            return Err(XmlError::NotWellFormed("non-character U+FFFE/U+FFFF"));
        }
        self.utf8_pos += valid.len();
        Ok(())
    }
}
