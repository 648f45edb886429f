//! DNS wire format: queries out, responses in, TCP framing (RFC 1035 §4).
//!
//! Owns the byte level: building a one-question recursive query, refusing hostile packets before
//! simple-dns sees them, and turning a parsed packet into owned, typed values ([`Response`],
//! [`Record`]) so nothing borrowed from a network buffer travels further. What a response
//! *means* for a question (CNAME chains, negative answers) is `answer.rs`'s job; which server to
//! ask and when is `resolver.rs`'s.
//!
//! The guard matters: simple-dns reserves `Vec` capacity from the header's record counts, so a
//! 12-byte packet claiming 65535 answers would make it reserve megabytes. [`check_counts`] proves
//! first that the packet is long enough to hold what it claims. Compression pointers are
//! followed by simple-dns, which only accepts pointers to earlier offsets, so a pointer loop ends
//! in an error rather than a hang (tested below).

use super::DnsError;
use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// The smallest question: root name (1 byte), type and class.
pub const MIN_QUESTION_LEN: usize = 5;
/// The smallest resource record: root name (1), type, class, TTL, RDLENGTH.
pub const MIN_RECORD_LEN: usize = 11;
/// The largest message: TCP's 2-byte length prefix caps it, and UDP's datagram size too.
pub const MAX_MESSAGE_LEN: usize = 65535;
/// Records accepted in one response, all sections together. Real answers for the types we ask
/// hold a handful; this caps what one response can make us allocate.
pub const MAX_RECORDS: usize = 256;
/// A name's text form without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// A label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// The record types Hearth asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Srv,
}

impl RecordType {
    /// The type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Cname => 5,
            RecordType::Aaaa => 28,
            RecordType::Srv => 33,
        }
    }

    fn to_simple(self) -> TYPE {
        match self {
            RecordType::A => TYPE::A,
            RecordType::Aaaa => TYPE::AAAA,
            RecordType::Cname => TYPE::CNAME,
            RecordType::Srv => TYPE::SRV,
        }
    }
}

/// An SRV record's data (RFC 2782). `target` is lowercase without the trailing dot; the root
/// (`.`, "service not available") is kept as `"."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

impl Srv {
    /// True for the target `.`, which RFC 2782 reserves for "decidedly not available".
    pub fn is_root_target(&self) -> bool {
        self.target == "."
    }
}

/// The data of a record of one of the [`RecordType`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The canonical name, lowercase, no trailing dot.
    Cname(String),
    Srv(Srv),
}

/// One owned resource record of class IN. `name` is lowercase without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    /// Seconds this record may be cached (from a cache hit: what remains of it).
    pub ttl: u32,
    pub data: RecordData,
}

impl Record {
    pub fn record_type(&self) -> RecordType {
        match self.data {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::Aaaa,
            RecordData::Cname(_) => RecordType::Cname,
            RecordData::Srv(_) => RecordType::Srv,
        }
    }
}

/// Why bytes were refused as a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than a header.
    TooShort,
    /// The header claims more questions or records than the packet could hold.
    CountsExceedLength,
    /// More than one question, or more than [`MAX_RECORDS`] records.
    TooManyRecords,
    /// The QR bit is clear, or the opcode is not a standard query.
    NotAResponse,
    /// simple-dns could not parse it (bad name, pointer loop, short record, ...).
    Malformed,
    /// Longer than [`MAX_MESSAGE_LEN`].
    TooLong,
}

/// The response code, reduced to what the resolver acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    /// NXDOMAIN: the name does not exist.
    NameError,
    ServerFailure,
    Refused,
    /// Anything else (FORMERR, NOTIMP, ...): this server cannot help.
    Other,
}

/// The question a response repeats, for matching it to ours (RFC 5452 §9.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionEcho {
    /// Lowercase, no trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// A parsed response, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: Rcode,
    /// The TC bit: the answer did not fit; ask again over TCP (RFC 1035 §4.2.1, RFC 7766).
    pub truncated: bool,
    /// The single question echoed back; `None` if absent or not a name we can read.
    pub question: Option<QuestionEcho>,
    /// Answer-section records of the types we know, class IN, with readable names. Others are
    /// skipped.
    pub answers: Vec<Record>,
    /// From an SOA in the authority section: how long a negative answer may be cached,
    /// min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    pub negative_ttl: Option<u32>,
}

impl Response {
    /// True if this response answers exactly our question: same name (ASCII case-insensitive,
    /// RFC 4343), type, and class IN.
    pub fn answers_question(&self, name: &str, rtype: RecordType) -> bool {
        match &self.question {
            Some(q) => {
                q.qclass == 1 && q.qtype == rtype.code() && q.name.eq_ignore_ascii_case(name)
            }
            None => false,
        }
    }
}

fn label_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Checks and normalises a name we are asked to look up: ASCII letters, digits, `-` and `_`
/// (SRV owner names), labels of 1..=63, at most 253 characters, one trailing dot allowed.
/// Returns it lowercase without the trailing dot. Internationalised names must arrive as
/// A-labels (punycode); converting is the caller's business.
pub fn normalize_name(name: &str) -> Result<String, DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(DnsError::InvalidName);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN || !label.bytes().all(label_byte_ok) {
            return Err(DnsError::InvalidName);
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// A wire name as lowercase text without the trailing dot (the root as `"."`). `None` if a label
/// holds bytes outside letters, digits, `-` and `_`: such names are never ones we asked about,
/// and refusing them keeps a label containing `.` from posing as two labels.
fn name_to_string(name: &Name<'_>) -> Option<String> {
    let labels = name.get_labels();
    if labels.is_empty() {
        return Some(".".to_owned());
    }
    let mut out = String::new();
    for label in labels {
        let bytes: &[u8] = label.as_ref();
        if bytes.is_empty() || !bytes.iter().all(|&b| label_byte_ok(b)) {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        for &b in bytes {
            out.push(char::from(b.to_ascii_lowercase()));
        }
    }
    Some(out)
}

/// Builds a recursive (RD) query with one question, class IN. `name` should come from
/// [`normalize_name`]; it is checked again here.
pub fn build_query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>, DnsError> {
    let name = normalize_name(name)?;
    let qname = Name::new(&name).map_err(|_| DnsError::InvalidName)?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(rtype.to_simple()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().map_err(|_| DnsError::InvalidName)
}

/// The message ID, if there is a header.
pub fn peek_id(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [a, b, ..] if bytes.len() >= HEADER_LEN => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

fn header_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let hi = *bytes.get(at)?;
    let lo = *bytes.get(at + 1)?;
    Some(u16::from_be_bytes([hi, lo]))
}

/// The guard before simple-dns: the packet must be long enough for every question and record
/// its header claims (at least [`MIN_QUESTION_LEN`] and [`MIN_RECORD_LEN`] bytes each), so the
/// capacity simple-dns reserves from the counts is bounded by the packet's own length.
pub fn check_counts(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() < HEADER_LEN {
        return Err(WireError::TooShort);
    }
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong);
    }
    let count = |at| header_u16(bytes, at).map(usize::from).unwrap_or(usize::MAX);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    // Each count is at most 65535, so the sums below cannot overflow a usize of 32 bits or more.
    let needed = qd * MIN_QUESTION_LEN + (an + ns + ar) * MIN_RECORD_LEN;
    if needed > bytes.len() - HEADER_LEN {
        return Err(WireError::CountsExceedLength);
    }
    Ok(())
}

/// Parses a response: guard, header sanity, then simple-dns, then conversion to owned values.
pub fn parse_response(bytes: &[u8]) -> Result<Response, WireError> {
    check_counts(bytes)?;
    let flags = header_u16(bytes, 2).ok_or(WireError::TooShort)?;
    if flags & 0x8000 == 0 || (flags >> 11) & 0xF != 0 {
        return Err(WireError::NotAResponse);
    }
    let count = |at| header_u16(bytes, at).map(usize::from).unwrap_or(usize::MAX);
    if count(4) > 1 || count(6) + count(8) + count(10) > MAX_RECORDS {
        return Err(WireError::TooManyRecords);
    }
    let packet = Packet::parse(bytes).map_err(|_| WireError::Malformed)?;

    let rcode = match packet.rcode() {
        RCODE::NoError => Rcode::NoError,
        RCODE::NameError => Rcode::NameError,
        RCODE::ServerFailure => Rcode::ServerFailure,
        RCODE::Refused => Rcode::Refused,
        _ => Rcode::Other,
    };
    let question = packet.questions.first().and_then(|q| {
        Some(QuestionEcho {
            name: name_to_string(&q.qname)?,
            qtype: q.qtype.into(),
            qclass: u16::from(q.qclass) | if q.unicast_response { 0x8000 } else { 0 },
        })
    });
    let answers = packet.answers.iter().filter_map(convert_record).collect();
    let negative_ttl = packet.name_servers.iter().find_map(|rr| match &rr.rdata {
        RData::SOA(soa) => Some(rr.ttl.min(soa.minimum)),
        _ => None,
    });
    Ok(Response {
        id: packet.id(),
        rcode,
        truncated: packet.has_flags(PacketFlag::TRUNCATION),
        question,
        answers,
        negative_ttl,
    })
}

fn convert_record(rr: &simple_dns::ResourceRecord<'_>) -> Option<Record> {
    if rr.class != CLASS::IN {
        return None;
    }
    let data = match &rr.rdata {
        RData::A(a) => RecordData::A(Ipv4Addr::from(a.address)),
        RData::AAAA(a) => RecordData::Aaaa(Ipv6Addr::from(a.address)),
        RData::CNAME(c) => RecordData::Cname(name_to_string(&c.0)?),
        RData::SRV(s) => RecordData::Srv(Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: name_to_string(&s.target)?,
        }),
        _ => return None,
    };
    Some(Record {
        name: name_to_string(&rr.name)?,
        ttl: rr.ttl,
        data,
    })
}

/// Prefixes a message with its 2-byte length for DNS over TCP (RFC 1035 §4.2.2).
pub fn frame_tcp(message: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = u16::try_from(message.len()).map_err(|_| WireError::TooLong)?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(out)
}

/// The first complete length-prefixed message in `bytes`, and how many bytes it took with its
/// prefix; `None` until all of it has arrived.
pub fn deframe_tcp(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len = usize::from(header_u16(bytes, 0)?);
    let message = bytes.get(2..2 + len)?;
    Some((message, 2 + len))
}

/// Collects a length-prefixed response from a TCP stream read in pieces. The resolver asks one
/// question per connection, so bytes past the end of a message in the same `push` are dropped;
/// the buffer never holds more than one message plus its prefix.
#[derive(Debug, Default)]
pub struct TcpDeframer {
    buf: Vec<u8>,
}

impl TcpDeframer {
    pub fn new() -> TcpDeframer {
        TcpDeframer::default()
    }

    /// Adds bytes read from the connection; returns the message (without prefix) once complete,
    /// after which the deframer is empty again.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut rest = bytes;
        if self.buf.len() < 2 {
            let take = rest.len().min(2 - self.buf.len());
            let (head, tail) = rest.split_at(take);
            self.buf.extend_from_slice(head);
            rest = tail;
        }
        let len = usize::from(header_u16(&self.buf, 0)?);
        let want = (2 + len).saturating_sub(self.buf.len());
        let take = rest.len().min(want);
        self.buf
            .extend_from_slice(rest.get(..take).unwrap_or_default());
        if self.buf.len() == 2 + len {
            let message = self.buf.split_off(2);
            self.buf.clear();
            return Some(message);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `_xmpp-server._tcp.example.org SRV` as a recursive server sends it, with
    /// compression: question name at offset 12, owner names pointing at it (0xc00c), the
    /// targets sharing `example.org` via a pointer to offset 30.
    const RECORDED_SRV: &[u8] = &[
        0x4a, 0x21, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // header
        // question: _xmpp-server._tcp.example.org SRV IN
        0x0c, b'_', b'x', b'm', b'p', b'p', b'-', b's', b'e', b'r', b'v', b'e', b'r', //
        0x04, b'_', b't', b'c', b'p', //
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'o', b'r', b'g', 0x00, //
        0x00, 0x21, 0x00, 0x01, //
        // answer 1: ptr->12, SRV IN ttl 300, 5 0 5269 xmpp1.<ptr 30>
        0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x0e, //
        0x00, 0x05, 0x00, 0x00, 0x14, 0x95, //
        0x05, b'x', b'm', b'p', b'p', b'1', 0xc0, 0x1e, //
        // answer 2: ptr->12, SRV IN ttl 300, 10 20 5270 XMPP2.<ptr 30>
        0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x0e, //
        0x00, 0x0a, 0x00, 0x14, 0x14, 0x96, //
        0x05, b'X', b'M', b'P', b'P', b'2', 0xc0, 0x1e,
    ];

    #[test]
    fn recorded_srv_with_pointers_parses() {
        let r = parse_response(RECORDED_SRV).unwrap();
        assert_eq!(r.id, 0x4a21);
        assert_eq!(r.rcode, Rcode::NoError);
        assert!(!r.truncated);
        assert!(r.answers_question("_XMPP-server._tcp.Example.ORG", RecordType::Srv));
        assert!(!r.answers_question("_xmpp-server._tcp.example.org", RecordType::A));
        assert_eq!(
            r.answers,
            vec![
                Record {
                    name: "_xmpp-server._tcp.example.org".into(),
                    ttl: 300,
                    data: RecordData::Srv(Srv {
                        priority: 5,
                        weight: 0,
                        port: 5269,
                        target: "xmpp1.example.org".into()
                    })
                },
                Record {
                    name: "_xmpp-server._tcp.example.org".into(),
                    ttl: 300,
                    data: RecordData::Srv(Srv {
                        priority: 10,
                        weight: 20,
                        port: 5270,
                        target: "xmpp2.example.org".into()
                    })
                },
            ]
        );
    }

    #[test]
    fn recorded_srv_truncated_at_every_length_errors_without_panic() {
        for len in 0..RECORDED_SRV.len() {
            assert!(parse_response(&RECORDED_SRV[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn header_claiming_65535_answers_is_refused_before_parsing() {
        let mut bytes = vec![0u8; 12];
        bytes[2] = 0x81;
        bytes[3] = 0x80;
        bytes[6] = 0xff;
        bytes[7] = 0xff;
        assert_eq!(check_counts(&bytes), Err(WireError::CountsExceedLength));
        assert_eq!(parse_response(&bytes), Err(WireError::CountsExceedLength));
        // Every count is guarded, not only the answers.
        for at in [4, 6, 8, 10] {
            let mut b = vec![0u8; 12 + 10];
            b[2] = 0x81;
            b[at] = 0xff;
            b[at + 1] = 0xff;
            assert_eq!(check_counts(&b), Err(WireError::CountsExceedLength), "{at}");
        }
    }

    #[test]
    fn counts_exactly_fitting_pass_the_guard() {
        // One question of 5 bytes and one record of 11 bytes fit in 12 + 16.
        let mut b = vec![0u8; 12 + 16];
        b[5] = 1;
        b[7] = 1;
        assert_eq!(check_counts(&b), Ok(()));
        b.pop();
        assert_eq!(check_counts(&b), Err(WireError::CountsExceedLength));
    }

    #[test]
    fn pointer_to_itself_is_an_error_not_a_hang() {
        // Question name is a pointer to offset 12, i.e. itself.
        let bytes = [
            0x00, 0x01, 0x81, 0x80, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01,
        ];
        assert_eq!(parse_response(&bytes), Err(WireError::Malformed));
    }

    #[test]
    fn pointer_loop_between_two_names_is_an_error() {
        // Question: label "a" then pointer to the answer's name at 18; the answer's name is a
        // pointer back to 12. A forward pointer, then a loop.
        let bytes = [
            0x00, 0x01, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, //
            0x01, b'a', 0xc0, 0x14, 0x00, 0x01, 0x00, 0x01, // question (12..20)
            0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04, 1, 2, 3, 4,
        ];
        assert_eq!(parse_response(&bytes), Err(WireError::Malformed));
    }

    #[test]
    fn query_has_rd_one_question_and_roundtrips() {
        let q = build_query(0xbeef, "Example.ORG.", RecordType::Aaaa).unwrap();
        assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
        let p = Packet::parse(&q).unwrap();
        assert_eq!(p.questions.len(), 1);
        assert_eq!(
            name_to_string(&p.questions[0].qname).unwrap(),
            "example.org"
        );
        assert_eq!(u16::from(p.questions[0].qtype), 28);
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(normalize_name("A.b-c._tcp."), Ok("a.b-c._tcp".into()));
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "é.org",
            "a\\.b",
            &"a".repeat(64),
            &"a.".repeat(128),
        ] {
            assert_eq!(normalize_name(bad), Err(DnsError::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn queries_are_refused_as_responses() {
        let q = build_query(1, "example.org", RecordType::A).unwrap();
        assert_eq!(parse_response(&q), Err(WireError::NotAResponse));
    }

    #[test]
    fn tcp_frame_and_deframe_roundtrip_in_pieces() {
        let msg = b"hello dns";
        let framed = frame_tcp(msg).unwrap();
        assert_eq!(&framed[..2], &[0, 9]);
        assert_eq!(deframe_tcp(&framed), Some((&msg[..], 11)));
        assert_eq!(deframe_tcp(&framed[..10]), None);
        assert_eq!(deframe_tcp(&framed[..1]), None);
        let mut d = TcpDeframer::new();
        let mut got = None;
        for b in &framed {
            if let Some(m) = d.push(std::slice::from_ref(b)) {
                got = Some(m);
            }
        }
        assert_eq!(got.as_deref(), Some(&msg[..]));
        assert!(frame_tcp(&vec![0; 65536]).is_err());
    }

    #[test]
    fn deframer_ignores_bytes_after_the_message() {
        let mut framed = frame_tcp(b"abc").unwrap();
        framed.extend_from_slice(&[0, 1, 9]);
        let mut d = TcpDeframer::new();
        assert_eq!(d.push(&framed), Some(b"abc".to_vec()));
    }

    #[test]
    fn mutated_and_random_packets_never_panic() {
        let mut rng = crate::dns::testutil::seeded_random(99);
        let mut byte = || {
            let mut b = [0u8; 1];
            rng(&mut b);
            b[0]
        };
        // Single-byte corruptions of a real response, at every offset.
        for at in 0..RECORDED_SRV.len() {
            for value in [0x00, 0x01, 0x3f, 0x40, 0xc0, 0xff, byte()] {
                let mut p = RECORDED_SRV.to_vec();
                p[at] = value;
                let _ = parse_response(&p);
            }
        }
        // Random garbage behind a plausible response header.
        for _ in 0..2000 {
            let len = usize::from(byte()) + 12;
            let mut p: Vec<u8> = (0..len).map(|_| byte()).collect();
            p[2] = 0x81;
            p[3] = 0x80;
            p[4] = 0;
            p[5] = 1;
            p[6] = 0;
            p[7] %= 4;
            p[8..12].fill(0);
            let _ = parse_response(&p);
        }
    }

    #[test]
    fn soa_in_authority_gives_negative_ttl() {
        let mut p = Packet::new_reply(7);
        *p.rcode_mut() = RCODE::NameError;
        p.questions.push(Question::new(
            Name::new("nope.example.org").unwrap(),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.name_servers.push(simple_dns::ResourceRecord::new(
            Name::new("example.org").unwrap(),
            CLASS::IN,
            900,
            RData::SOA(simple_dns::rdata::SOA {
                mname: Name::new("ns.example.org").unwrap(),
                rname: Name::new("host.example.org").unwrap(),
                serial: 1,
                refresh: 1,
                retry: 1,
                expire: 1,
                minimum: 120,
            }),
        ));
        let bytes = p.build_bytes_vec_compressed().unwrap();
        let r = parse_response(&bytes).unwrap();
        assert_eq!(r.rcode, Rcode::NameError);
        assert_eq!(r.negative_ttl, Some(120));
        for len in 0..bytes.len() {
            assert!(parse_response(&bytes[..len]).is_err(), "len {len}");
        }
    }
}
