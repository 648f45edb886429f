//! Splits an XMPP stream's bytes into the stream header and complete top-level elements.
//!
//! Owns: just enough XML tokenising to find where each depth-1 element ends (tags, quoted
//! attribute values, comments, CDATA, processing instructions). It does not validate; the
//! servers under test produce well-formed XML and we only need element boundaries.

/// One thing found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream ...>` was read.
    Open,
    /// A complete top-level element: byte range in the buffer.
    Elem(usize, usize),
    /// `</stream:stream>` was read.
    Close,
}

#[derive(Default)]
pub struct Splitter {
    /// Where scanning resumes.
    pub pos: usize,
    depth: u32,
    /// Start of the current depth-1 element.
    start: usize,
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

impl Splitter {
    /// A new stream begins (after STARTTLS or SASL success).
    pub fn reset(&mut self) {
        *self = Splitter::default();
    }

    /// The next event in `buf`, or None when more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Option<Event> {
        loop {
            let lt = self.pos + buf.get(self.pos..)?.iter().position(|&b| b == b'<')?;
            let after = *buf.get(lt + 1)?;
            match after {
                b'?' => {
                    let end = find(buf, lt + 2, b"?>")?;
                    self.pos = end + 2;
                }
                b'!' => {
                    let end = if buf.get(lt..lt + 4) == Some(b"<!--") {
                        find(buf, lt + 4, b"-->")? + 3
                    } else if buf.get(lt..lt + 9) == Some(b"<![CDATA[") {
                        find(buf, lt + 9, b"]]>")? + 3
                    } else if buf.len() < lt + 9 {
                        return None;
                    } else {
                        find(buf, lt + 2, b">")? + 1
                    };
                    self.pos = end;
                }
                b'/' => {
                    let gt = lt + buf[lt..].iter().position(|&b| b == b'>')?;
                    self.pos = gt + 1;
                    self.depth = self.depth.saturating_sub(1);
                    match self.depth {
                        0 => return Some(Event::Close),
                        1 => return Some(Event::Elem(self.start, gt + 1)),
                        _ => {}
                    }
                }
                _ => {
                    // Start tag: find '>' outside quotes.
                    let mut q = 0u8;
                    let mut gt = None;
                    for (i, &b) in buf[lt + 1..].iter().enumerate() {
                        if q != 0 {
                            if b == q {
                                q = 0;
                            }
                        } else if b == b'"' || b == b'\'' {
                            q = b;
                        } else if b == b'>' {
                            gt = Some(lt + 1 + i);
                            break;
                        }
                    }
                    let gt = gt?;
                    let selfclose = buf[gt - 1] == b'/';
                    self.pos = gt + 1;
                    if self.depth == 0 {
                        self.depth = 1;
                        return Some(Event::Open);
                    }
                    if self.depth == 1 {
                        self.start = lt;
                        if selfclose {
                            return Some(Event::Elem(lt, gt + 1));
                        }
                    }
                    if !selfclose {
                        self.depth += 1;
                    }
                }
            }
        }
    }

    /// How many leading bytes of the buffer are no longer needed.
    pub fn consumed(&self) -> usize {
        if self.depth >= 2 {
            self.start
        } else {
            self.pos
        }
    }

    /// The caller removed `n` leading bytes.
    pub fn shift(&mut self, n: usize) {
        self.pos -= n;
        self.start = self.start.saturating_sub(n);
    }
}

/// Local name of the element starting at `el[0] == b'<'`.
pub fn name(el: &[u8]) -> &[u8] {
    let end = el
        .iter()
        .skip(1)
        .position(|&b| {
            b == b' ' || b == b'>' || b == b'/' || b == b'\t' || b == b'\n' || b == b'\r'
        })
        .map_or(el.len(), |p| p + 1);
    let n = &el[1.min(end)..end];
    match n.iter().position(|&b| b == b':') {
        Some(c) => &n[c + 1..],
        None => n,
    }
}

/// Text between the first `<tag>`/`<tag ...>` and `</tag>` (no unescaping).
pub fn text_of<'a>(el: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    let open = format!("<{tag}");
    let mut from = 0;
    loop {
        let p = find(el, from, open.as_bytes())?;
        let c = *el.get(p + open.len())?;
        if c == b'>' || c == b' ' || c == b'/' {
            let gt = p + el[p..].iter().position(|&b| b == b'>')?;
            if el[gt - 1] == b'/' {
                return Some(&[]);
            }
            let close = format!("</{tag}>");
            let e = find(el, gt + 1, close.as_bytes())?;
            return Some(&el[gt + 1..e]);
        }
        from = p + 1;
    }
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    find(hay, 0, needle.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_in_chunks_yields_elements() {
        let s = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' a='>'><stream:features><starttls xmlns='x'><required/></starttls></stream:features><proceed/><!-- c --><message><body>a &lt; b</body></message></stream:stream>";
        let mut all = Vec::new();
        for cut in 1..s.len() {
            let mut sp = Splitter::default();
            let mut buf = s[..cut].to_vec();
            let mut ev = Vec::new();
            while let Some(e) = sp.next(&buf) {
                ev.push(match e {
                    Event::Elem(a, b) => String::from_utf8(buf[a..b].to_vec()).unwrap(),
                    Event::Open => "OPEN".into(),
                    Event::Close => "CLOSE".into(),
                });
            }
            let n = sp.consumed();
            buf.drain(..n);
            sp.shift(n);
            buf.extend_from_slice(&s[cut..]);
            while let Some(e) = sp.next(&buf) {
                ev.push(match e {
                    Event::Elem(a, b) => String::from_utf8(buf[a..b].to_vec()).unwrap(),
                    Event::Open => "OPEN".into(),
                    Event::Close => "CLOSE".into(),
                });
            }
            all.push(ev);
        }
        for ev in all {
            assert_eq!(ev.len(), 5, "{ev:?}");
            assert_eq!(ev[0], "OPEN");
            assert!(
                ev[1].starts_with("<stream:features>") && ev[1].ends_with("</stream:features>")
            );
            assert_eq!(ev[2], "<proceed/>");
            assert_eq!(ev[3], "<message><body>a &lt; b</body></message>");
            assert_eq!(ev[4], "CLOSE");
        }
    }

    #[test]
    fn name_and_text_extract() {
        assert_eq!(name(b"<stream:features>"), b"features");
        assert_eq!(name(b"<proceed xmlns='x'/>"), b"proceed");
        let el = b"<iq type='result'><bind xmlns='b'><jid>u1@localhost/r</jid></bind></iq>";
        assert_eq!(text_of(el, "jid"), Some(&b"u1@localhost/r"[..]));
        assert_eq!(
            text_of(b"<m><bodyx>1</bodyx><body>2</body></m>", "body"),
            Some(&b"2"[..])
        );
    }
}
