//! The control channel between `hearth user …` and a running server: a Unix socket in the data
//! folder carrying one request line and a reply.
//!
//! Owns: the request and reply formats, validation of the account named in a request, and
//! carrying the request out against a `Store`. Sans-IO: the server's `handle_control` and the
//! CLI's offline path both call `parse`/`execute`/`format_reply`; sockets belong to `net` and
//! `cli`. Leaves to others: password handling (the CLI derives `Credentials` itself, so a
//! password never crosses the socket) and ending the sessions of a changed account (server).
//!
//! Request (one line, tokens separated by one space):
//! `user-add JID HEX`, `user-passwd JID HEX`, `user-del JID`, `user-list [DOMAIN]`, where HEX is
//! `Credentials::encode()` in lowercase hex. Reply: `ok` or `error: MESSAGE`, then data lines,
//! each ended by `\n`.

use crate::config::Config;
use crate::jid::Jid;
use crate::sasl::Credentials;
use crate::store::Store;

/// Longest request line the server needs to accept (a JID of 3 × 1023 bytes plus credentials
/// of a few hundred bytes, in hex, fit well within it).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// One command for the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    UserAdd { jid: String, creds: Credentials },
    UserPasswd { jid: String, creds: Credentials },
    UserDel { jid: String },
    UserList { domain: Option<String> },
}

impl ControlRequest {
    /// The request line, without its `\n`. JIDs and domains are expected to be validated
    /// already (`account_jid`/`hosted_domain`), so they contain no spaces or line breaks.
    pub fn encode(&self) -> String {
        match self {
            ControlRequest::UserAdd { jid, creds } => {
                format!("user-add {jid} {}", hex_encode(&creds.encode()))
            }
            ControlRequest::UserPasswd { jid, creds } => {
                format!("user-passwd {jid} {}", hex_encode(&creds.encode()))
            }
            ControlRequest::UserDel { jid } => format!("user-del {jid}"),
            ControlRequest::UserList { domain: None } => "user-list".to_owned(),
            ControlRequest::UserList { domain: Some(d) } => format!("user-list {d}"),
        }
    }

    /// Parses a request line (a trailing `\n` or `\r\n` is ignored). The error says what is
    /// wrong with it.
    pub fn parse(line: &str) -> Result<ControlRequest, String> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.take(3).collect();
        let creds = |hex: &str| {
            hex_decode(hex)
                .and_then(|b| Credentials::decode(&b))
                .ok_or_else(|| "malformed credentials".to_owned())
        };
        let req = match (verb, args.as_slice()) {
            ("user-add", [jid, hex]) => ControlRequest::UserAdd {
                jid: (*jid).to_owned(),
                creds: creds(hex)?,
            },
            ("user-passwd", [jid, hex]) => ControlRequest::UserPasswd {
                jid: (*jid).to_owned(),
                creds: creds(hex)?,
            },
            ("user-del", [jid]) => ControlRequest::UserDel {
                jid: (*jid).to_owned(),
            },
            ("user-list", []) => ControlRequest::UserList { domain: None },
            ("user-list", [d]) => ControlRequest::UserList {
                domain: Some((*d).to_owned()),
            },
            ("user-add" | "user-passwd" | "user-del" | "user-list", _) => {
                return Err(format!("wrong number of arguments for {verb}"));
            }
            _ => return Err(format!("unknown control command {:?}", truncate(verb, 40))),
        };
        if args.iter().any(|a| a.is_empty()) {
            return Err(format!("empty argument to {verb}"));
        }
        Ok(req)
    }
}

/// Validates `jid` as an account of this server and returns its normalised bare form.
/// The error names the JID and the problem.
pub fn account_jid(jid: &str, config: &Config) -> Result<String, String> {
    let parsed = Jid::parse(jid).map_err(|e| format!("{jid}: not a valid JID ({e})"))?;
    if parsed.local().is_none() {
        return Err(format!(
            "{jid}: an account needs a user name, like alice@{}",
            parsed.domain()
        ));
    }
    if !parsed.is_bare() {
        return Err(format!(
            "{jid}: an account JID has no resource; use {}",
            parsed.to_bare()
        ));
    }
    hosted(&parsed, jid, config)?;
    Ok(parsed.to_string())
}

/// Validates `domain` as one hosted here and returns its normalised form.
pub fn hosted_domain(domain: &str, config: &Config) -> Result<String, String> {
    let parsed =
        Jid::domain_jid(domain).map_err(|e| format!("{domain}: not a valid domain ({e})"))?;
    hosted(&parsed, domain, config)?;
    Ok(parsed.domain().to_owned())
}

fn hosted(jid: &Jid, given: &str, config: &Config) -> Result<(), String> {
    if config.hosts(jid.domain()) {
        Ok(())
    } else {
        Err(format!(
            "{given}: domain {} is not hosted here (hosted: {})",
            jid.domain(),
            config.domains.join(", ")
        ))
    }
}

/// Carries out `req` against `store`. On success, returns the lines to show the user: what was
/// done, or the list of accounts.
pub fn execute(
    req: &ControlRequest,
    config: &Config,
    store: &mut dyn Store,
) -> Result<Vec<String>, String> {
    let storage = |e: crate::store::StoreError| format!("storage failure: {e}");
    match req {
        ControlRequest::UserAdd { jid, creds } => {
            let jid = account_jid(jid, config)?;
            if store.account_create(&jid, creds).map_err(storage)? {
                Ok(vec![format!("created {jid}")])
            } else {
                Err(format!("{jid} already exists"))
            }
        }
        ControlRequest::UserPasswd { jid, creds } => {
            let jid = account_jid(jid, config)?;
            if store
                .account_set_credentials(&jid, creds)
                .map_err(storage)?
            {
                Ok(vec![format!("changed the password of {jid}")])
            } else {
                Err(format!("{jid}: no such account"))
            }
        }
        ControlRequest::UserDel { jid } => {
            let jid = account_jid(jid, config)?;
            if store.account_delete(&jid).map_err(storage)? {
                Ok(vec![format!("deleted {jid}")])
            } else {
                Err(format!("{jid}: no such account"))
            }
        }
        ControlRequest::UserList { domain } => {
            let domain = domain
                .as_deref()
                .map(|d| hosted_domain(d, config))
                .transpose()?;
            store.account_list(domain.as_deref()).map_err(storage)
        }
    }
}

/// The reply text for `result`. Line breaks inside a message or data line become spaces, so
/// the reply always parses back into as many lines as were given.
pub fn format_reply(result: &Result<Vec<String>, String>) -> String {
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    match result {
        Ok(lines) => {
            let mut out = String::from("ok\n");
            for l in lines {
                out.push_str(&one_line(l));
                out.push('\n');
            }
            out
        }
        Err(msg) => format!("error: {}\n", one_line(msg)),
    }
}

/// Parses `format_reply`'s output back.
pub fn parse_reply(text: &str) -> Result<Vec<String>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some("ok") => Ok(lines.map(str::to_owned).collect()),
        Some(first) => match first.strip_prefix("error: ") {
            Some(msg) => Err(msg.to_owned()),
            None => Err(format!(
                "unexpected reply from the server: {:?}",
                truncate(first, 80)
            )),
        },
        None => Err("the server closed the control connection without a reply".to_owned()),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary (for quoting untrusted input).
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Both indices are a nibble, below 16 = DIGITS.len().
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::conformance::creds;

    fn config() -> Config {
        Config {
            domains: vec!["localhost".to_owned(), "example.org".to_owned()],
            ..Config::default()
        }
    }

    #[test]
    fn request_encode_parse_round_trips() {
        for req in [
            ControlRequest::UserAdd {
                jid: "alice@localhost".into(),
                creds: creds(1),
            },
            ControlRequest::UserPasswd {
                jid: "alice@localhost".into(),
                creds: creds(2),
            },
            ControlRequest::UserDel {
                jid: "alice@localhost".into(),
            },
            ControlRequest::UserList { domain: None },
            ControlRequest::UserList {
                domain: Some("example.org".into()),
            },
        ] {
            let line = req.encode();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(ControlRequest::parse(&line), Ok(req.clone()));
            assert_eq!(ControlRequest::parse(&format!("{line}\r\n")), Ok(req));
        }
    }

    #[test]
    fn request_encode_has_no_password_material_but_hex() {
        let line = ControlRequest::UserAdd {
            jid: "a@localhost".into(),
            creds: creds(0xab),
        }
        .encode();
        let hex = line.strip_prefix("user-add a@localhost ").unwrap();
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hex_decode(hex), Some(creds(0xab).encode()));
    }

    #[test]
    fn request_malformed_refused_with_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "unknown control command"),
            ("shutdown", "unknown control command"),
            ("user-add alice@localhost", "wrong number of arguments"),
            ("user-add alice@localhost zz", "malformed credentials"),
            ("user-add alice@localhost abc", "malformed credentials"),
            ("user-add alice@localhost 0102", "malformed credentials"),
            ("user-del", "wrong number of arguments"),
            ("user-del a@localhost extra", "wrong number of arguments"),
            ("user-del  a@localhost", "wrong number of arguments"),
            ("user-list a b", "wrong number of arguments"),
            ("user-list ", "empty argument"),
        ];
        for (line, want) in cases {
            let err = ControlRequest::parse(line).unwrap_err();
            assert!(err.contains(want), "{line:?}: {err}");
        }
    }

    #[test]
    fn reply_format_parse_round_trips() {
        for r in [
            Ok(vec![]),
            Ok(vec![
                "alice@localhost".to_owned(),
                "bob@localhost".to_owned(),
            ]),
            Err("alice@localhost already exists".to_owned()),
        ] {
            assert_eq!(parse_reply(&format_reply(&r)), r);
        }
        assert_eq!(format_reply(&Ok(vec!["x".into()])), "ok\nx\n");
        assert_eq!(format_reply(&Err("bad".into())), "error: bad\n");
        // A line break in a message cannot forge extra lines.
        assert_eq!(
            parse_reply(&format_reply(&Err("a\nok".into()))),
            Err("a ok".to_owned())
        );
    }

    #[test]
    fn reply_garbage_or_empty_is_error() {
        assert!(parse_reply("").unwrap_err().contains("without a reply"));
        assert!(
            parse_reply("hello\n")
                .unwrap_err()
                .contains("unexpected reply")
        );
    }

    #[test]
    fn execute_add_list_passwd_del_succeed() {
        let (c, mut s) = (config(), MemoryStore::new());
        let add = |jid: &str| ControlRequest::UserAdd {
            jid: jid.into(),
            creds: creds(1),
        };
        assert_eq!(
            execute(&add("Alice@LocalHost"), &c, &mut s),
            Ok(vec!["created alice@localhost".to_owned()])
        );
        execute(&add("bob@example.org"), &c, &mut s).unwrap();
        assert_eq!(
            execute(&ControlRequest::UserList { domain: None }, &c, &mut s),
            Ok(vec![
                "alice@localhost".to_owned(),
                "bob@example.org".to_owned()
            ])
        );
        let list_org = ControlRequest::UserList {
            domain: Some("Example.org".into()),
        };
        assert_eq!(
            execute(&list_org, &c, &mut s),
            Ok(vec!["bob@example.org".to_owned()])
        );
        let passwd = ControlRequest::UserPasswd {
            jid: "alice@localhost".into(),
            creds: creds(2),
        };
        assert_eq!(
            execute(&passwd, &c, &mut s),
            Ok(vec!["changed the password of alice@localhost".to_owned()])
        );
        assert_eq!(
            s.account_credentials("alice@localhost").unwrap(),
            Some(creds(2))
        );
        let del = ControlRequest::UserDel {
            jid: "alice@localhost".into(),
        };
        assert_eq!(
            execute(&del, &c, &mut s),
            Ok(vec!["deleted alice@localhost".to_owned()])
        );
        assert_eq!(s.account_credentials("alice@localhost").unwrap(), None);
    }

    #[test]
    fn execute_duplicate_or_missing_account_errors() {
        let (c, mut s) = (config(), MemoryStore::new());
        let add = ControlRequest::UserAdd {
            jid: "alice@localhost".into(),
            creds: creds(1),
        };
        execute(&add, &c, &mut s).unwrap();
        assert_eq!(
            execute(&add, &c, &mut s),
            Err("alice@localhost already exists".to_owned())
        );
        assert_eq!(
            s.account_credentials("alice@localhost").unwrap(),
            Some(creds(1))
        );
        let del = ControlRequest::UserDel {
            jid: "bob@localhost".into(),
        };
        assert_eq!(
            execute(&del, &c, &mut s),
            Err("bob@localhost: no such account".to_owned())
        );
        let passwd = ControlRequest::UserPasswd {
            jid: "bob@localhost".into(),
            creds: creds(2),
        };
        assert_eq!(
            execute(&passwd, &c, &mut s),
            Err("bob@localhost: no such account".to_owned())
        );
        assert_eq!(s.account_count().unwrap(), 1);
    }

    #[test]
    fn execute_bad_jid_errors_name_problem() {
        let (c, mut s) = (Config::default(), MemoryStore::new());
        let cases: &[(&str, &str)] = &[
            (
                "alice@nowhere",
                "alice@nowhere: domain nowhere is not hosted here (hosted: localhost)",
            ),
            ("localhost", "localhost: an account needs a user name"),
            ("alice@localhost/phone", "use alice@localhost"),
            ("al ice@localhost", "al ice@localhost: not a valid JID"),
            ("@localhost", "not a valid JID (an empty part)"),
        ];
        for (jid, want) in cases {
            let req = ControlRequest::UserAdd {
                jid: (*jid).into(),
                creds: creds(1),
            };
            let err = execute(&req, &c, &mut s).unwrap_err();
            assert!(err.contains(want), "{jid}: {err}");
        }
        let list = ControlRequest::UserList {
            domain: Some("nowhere".into()),
        };
        assert_eq!(
            execute(&list, &c, &mut s),
            Err("nowhere: domain nowhere is not hosted here (hosted: localhost)".to_owned())
        );
        assert_eq!(s.account_count().unwrap(), 0);
    }
}
