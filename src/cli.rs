//! Command-line parsing, `serve` wiring, and the `user …` commands.
//!
//! Owns: the argument grammar, reading a password from the terminal or standard input,
//! deriving credentials on this side (so a password never reaches the server's socket), and
//! choosing between the running server's control socket and opening the database directly.
//! Leaves to others: the request format and its execution (`control`), the event loop (`net`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigSource};
use crate::control::{self, ControlRequest};
use crate::sasl::Credentials;
use crate::server::{RandomSource, Server};
use crate::store::{RedbStore, Store};

const USAGE: &str = "\
Usage:
  hearth [--config PATH] [serve]             run the server (the default command)
  hearth [--config PATH] user add JID        create an account
  hearth [--config PATH] user passwd JID     change an account's password
  hearth [--config PATH] user del JID        delete an account
  hearth [--config PATH] user list [DOMAIN]  list accounts
  hearth [--config PATH] check dns DOMAIN [--nameserver IP:PORT] [--timeout SECS]
                                             [--ca-file PATH]
                                             what remote servers find for DOMAIN
                                             (SRV records, addresses, ports, TLS and
                                             certificate) and what is wrong; exit 0 if
                                             a remote server can reach it, 1 if not
  hearth --version | --help

Without --config, ./hearth.toml is used if it exists, else built-in defaults
(domain localhost, data in ./hearth-data). `user add` and `user passwd` read the
password from standard input when it is not a terminal.
";

/// Longest accepted password, in bytes.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest reply read from the control socket (an account list of tens of thousands fits).
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// How long the CLI waits for a running server to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    UserAdd { jid: String },
    UserPasswd { jid: String },
    UserDel { jid: String },
    UserList { domain: Option<String> },
    CheckDns(crate::check::DnsCheckArgs),
    Help,
    Version,
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `--config PATH`, if given.
    pub config: Option<PathBuf>,
    pub command: Command,
}

/// Parses the arguments after the program name. `--config` may stand anywhere; `--help` and
/// `--version` win over everything else. The error names the offending argument.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Invocation, String> {
    let mut config = None;
    let mut words = Vec::new();
    let mut flag = None;
    // `check dns` options with their values, checked once the command is known.
    let mut check_options: Vec<(&'static str, String)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let path = match arg.to_str() {
            Some("--config") => Some(
                args.next()
                    .ok_or_else(|| "--config needs a path".to_owned())?,
            ),
            Some(s) if s.starts_with("--config=") => {
                Some(OsString::from(s.trim_start_matches("--config=")))
            }
            _ => None,
        };
        if let Some(path) = path {
            if path.is_empty() {
                return Err("--config needs a path".to_owned());
            }
            if config.replace(PathBuf::from(path)).is_some() {
                return Err("--config given twice".to_owned());
            }
            continue;
        }
        if let Some((name, inline)) = arg.to_str().and_then(crate::check::value_option) {
            let value = match inline {
                Some(v) => v,
                None => args
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| format!("{name} needs a value"))?,
            };
            check_options.push((name, value));
            continue;
        }
        match arg.to_str() {
            Some("-h" | "--help") => flag = Some(Command::Help),
            Some("-V" | "--version") => flag = flag.or(Some(Command::Version)),
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("unknown option {s}"));
            }
            Some(s) => words.push(s.to_owned()),
            None => return Err(format!("argument {arg:?} is not valid UTF-8")),
        }
    }
    if let Some(command) = flag {
        return Ok(Invocation { config, command });
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        [] | ["serve"] => Command::Serve,
        ["serve", extra, ..] => return Err(format!("unexpected argument {extra} after serve")),
        ["user", "add", jid] => Command::UserAdd {
            jid: jid.to_string(),
        },
        ["user", "passwd", jid] => Command::UserPasswd {
            jid: jid.to_string(),
        },
        ["user", "del", jid] => Command::UserDel {
            jid: jid.to_string(),
        },
        ["user", "list"] => Command::UserList { domain: None },
        ["user", "list", d] => Command::UserList {
            domain: Some(d.to_string()),
        },
        ["user", sub @ ("add" | "passwd" | "del")] => {
            return Err(format!("user {sub} needs a JID"));
        }
        ["user", "add" | "passwd" | "del" | "list", _, extra, ..] => {
            return Err(format!("unexpected argument {extra}"));
        }
        ["user"] => return Err("user needs a subcommand: add, passwd, del or list".to_owned()),
        ["user", sub, ..] => {
            return Err(format!(
                "unknown user subcommand {sub} (expected add, passwd, del or list)"
            ));
        }
        ["check", "dns", domain] => {
            Command::CheckDns(crate::check::DnsCheckArgs::parse(domain, &check_options)?)
        }
        ["check", "dns"] => return Err("check dns needs a DOMAIN".to_owned()),
        ["check", "dns", _, extra, ..] => return Err(format!("unexpected argument {extra}")),
        ["check"] => return Err("check needs a subcommand: dns".to_owned()),
        ["check", sub, ..] => {
            return Err(format!("unknown check subcommand {sub} (expected dns)"));
        }
        [other, ..] => return Err(format!("unknown command {other}")),
    };
    if let (Some((name, _)), false) = (
        check_options.first(),
        matches!(command, Command::CheckDns(_)),
    ) {
        return Err(format!("{name} is an option of check dns only"));
    }
    Ok(Invocation { config, command })
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let inv = match parse_args(std::env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(msg) => {
            eprintln!("hearth: {msg}");
            eprint!("{USAGE}");
            return 2;
        }
    };
    let config_path = inv.config.as_deref();
    match inv.command {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::Version => {
            println!("hearth {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Serve => serve(config_path),
        Command::CheckDns(args) => crate::check::main(config_path, &args),
        user => match user_command(config_path, &user) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                0
            }
            Err(msg) => {
                eprintln!("hearth: {msg}");
                1
            }
        },
    }
}

// ---- serve ----

fn serve(config_path: Option<&Path>) -> i32 {
    let config = match Config::discover(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth: {e}");
            return 1;
        }
    };
    init_logging(&config.log_level);
    match &config.source {
        ConfigSource::BuiltIn => {
            log::info!("config: built-in defaults (no --config, no ./hearth.toml)")
        }
        ConfigSource::File(p) => log::info!("config: {}", p.display()),
    }
    match serve_with(config, config_path) {
        Ok(()) => 0,
        Err(msg) => {
            if log::log_enabled!(log::Level::Error) {
                log::error!("{msg}");
            } else {
                eprintln!("hearth: {msg}");
            }
            1
        }
    }
}

fn init_logging(level: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
}

fn serve_with(config: Config, config_path: Option<&Path>) -> Result<(), String> {
    create_data_dir(&config.data_dir)?;
    let store = RedbStore::open(&config.db_path(), config.storage.cache_bytes)
        .map_err(|e| e.to_string())?;
    let accounts = store.account_count().map_err(|e| e.to_string())?;
    let tls = crate::tls::load(&config).map_err(|e| e.to_string())?;
    let random = OsRandom::open().map_err(|e| format!("{URANDOM}: {e}"))?;
    if accounts == 0 {
        // Built-in defaults always host at least one domain; `localhost` is only a fallback.
        let domain = config.domains.first().map_or("localhost", String::as_str);
        let config_arg = config_path
            .map(|p| format!("--config {} ", p.display()))
            .unwrap_or_default();
        log::info!("no accounts yet: create one with `hearth {config_arg}user add alice@{domain}`");
    }
    let config = Arc::new(config);
    let server = Server::new(
        config.clone(),
        Box::new(store),
        Box::new(random),
        Instant::now(),
    );
    crate::net::run(config, server, tls).map_err(|e| format!("server stopped: {e}"))
}

/// Creates the data folder (and parents) readable only by us; an existing one is left as is.
fn create_data_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data folder {}: {e}", dir.display()))
}

const URANDOM: &str = "/dev/urandom";

/// The kernel's random source, for nonces and salts.
pub struct OsRandom(File);

impl OsRandom {
    pub fn open() -> io::Result<OsRandom> {
        File::open(URANDOM).map(OsRandom)
    }
}

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // Reading /dev/urandom does not fail once it is open. If it ever did, going on with
        // predictable nonces would be worse than stopping, and `fill` has no way to report.
        if let Err(e) = self.0.read_exact(buf) {
            panic!("reading {URANDOM} failed: {e}");
        }
    }
}

// ---- user commands ----

/// Runs a `user …` command; returns the lines to print.
fn user_command(config_path: Option<&Path>, cmd: &Command) -> Result<Vec<String>, String> {
    let config = Config::discover(config_path).map_err(|e| e.to_string())?;
    let req = match cmd {
        Command::UserAdd { jid } => {
            let jid = control::account_jid(jid, &config)?;
            let creds = derive(&read_password(&jid)?)?;
            ControlRequest::UserAdd { jid, creds }
        }
        Command::UserPasswd { jid } => {
            let jid = control::account_jid(jid, &config)?;
            let creds = derive(&read_password(&jid)?)?;
            ControlRequest::UserPasswd { jid, creds }
        }
        Command::UserDel { jid } => ControlRequest::UserDel {
            jid: control::account_jid(jid, &config)?,
        },
        Command::UserList { domain } => ControlRequest::UserList {
            domain: domain
                .as_deref()
                .map(|d| control::hosted_domain(d, &config))
                .transpose()?,
        },
        Command::Serve | Command::CheckDns(_) | Command::Help | Command::Version => {
            return Err("not a user command".to_owned());
        }
    };
    send(&req, &config)
}

fn derive(password: &str) -> Result<Credentials, String> {
    let mut urandom = File::open(URANDOM).map_err(|e| format!("{URANDOM}: {e}"))?;
    let mut failure = None;
    let creds = Credentials::derive(
        password,
        crate::sasl::credentials::DEFAULT_ITERATIONS,
        &mut |buf: &mut [u8]| {
            if let Err(e) = urandom.read_exact(buf) {
                failure.get_or_insert(e);
            }
        },
    );
    if let Some(e) = failure {
        return Err(format!("reading {URANDOM} failed: {e}"));
    }
    creds.map_err(|f| {
        format!(
            "the password cannot be used: it contains characters SASLprep forbids ({})",
            f.name()
        )
    })
}

/// Reads the password: one line from standard input if it is not a terminal, else prompted
/// twice on the terminal with echo off.
fn read_password(jid: &str) -> Result<String, String> {
    let stdin = io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt_hidden(&format!("Password for {jid}: "))?;
        let second = prompt_hidden("Repeat: ")?;
        if first != second {
            return Err("the passwords do not match".to_owned());
        }
        first
    } else {
        read_password_line(&mut stdin.lock())?
            .ok_or_else(|| "no password on standard input".to_owned())?
    };
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    Ok(password)
}

/// One line of at most `MAX_PASSWORD_BYTES`, its `\n` or `\r\n` stripped; `None` at end of
/// input.
fn read_password_line(input: &mut dyn BufRead) -> Result<Option<String>, String> {
    let mut line = String::new();
    // Two more for the line ending, one more to notice an over-long line.
    let limit = (MAX_PASSWORD_BYTES + 3) as u64;
    let n = input
        .take(limit)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(Some(line.to_owned()))
}

fn prompt_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = io::stderr().flush();
    let line = {
        let _echo = EchoOff::new();
        read_password_line(&mut io::stdin().lock())
    };
    // The Enter key was not echoed either.
    eprintln!();
    line?.ok_or_else(|| "no password entered".to_owned())
}

/// Terminal echo switched off with `stty` for as long as it lives; restored on drop, so also
/// when reading fails. Without `stty` the password is read with echo on.
struct EchoOff {
    active: bool,
}

impl EchoOff {
    fn new() -> EchoOff {
        EchoOff {
            active: stty("-echo"),
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if self.active {
            stty("echo");
        }
    }
}

/// Runs `stty SETTING` on the controlling terminal; true if it worked.
fn stty(setting: &str) -> bool {
    let Ok(tty) = File::open("/dev/tty") else {
        return false;
    };
    std::process::Command::new("stty")
        .arg(setting)
        .stdin(tty)
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `req` to the running server, or, when none is listening, carries it out on the
/// database directly.
fn send(req: &ControlRequest, config: &Config) -> Result<Vec<String>, String> {
    let socket = config.control_socket_path();
    match UnixStream::connect(&socket) {
        Ok(stream) => exchange(stream, req)
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?,
        // No socket, or one left behind by a server that is gone.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            create_data_dir(&config.data_dir)?;
            let mut store = RedbStore::open(&config.db_path(), config.storage.cache_bytes)
                .map_err(|e| e.to_string())?;
            let lines = control::execute(req, config, &mut store)?;
            // The store groups writes until a commit; nothing is done until it is durable.
            store
                .commit()
                .map_err(|e| format!("storage failure: {e}"))?;
            Ok(lines)
        }
        Err(e) => Err(format!(
            "cannot reach the running server at {}: {e}",
            socket.display()
        )),
    }
}

fn exchange(
    mut stream: UnixStream,
    req: &ControlRequest,
) -> io::Result<Result<Vec<String>, String>> {
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    stream.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    stream.write_all(format!("{}\n", req.encode()).as_bytes())?;
    // The request is complete; a server that reads to end of input sees it now. A server that
    // already answered and closed makes this fail, which is fine.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    (&mut stream)
        .take(MAX_REPLY_BYTES + 1)
        .read_to_string(&mut reply)?;
    if reply.len() as u64 > MAX_REPLY_BYTES {
        return Ok(Err(format!(
            "the server's reply is longer than {MAX_REPLY_BYTES} bytes"
        )));
    }
    Ok(control::parse_reply(&reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn args_valid_parse_to_command() {
        let jid = |s: &str| s.to_owned();
        let cases: &[(&[&str], Option<&str>, Command)] = &[
            (&[], None, Command::Serve),
            (&["serve"], None, Command::Serve),
            (&["--config", "h.toml"], Some("h.toml"), Command::Serve),
            (
                &["--config=h.toml", "serve"],
                Some("h.toml"),
                Command::Serve,
            ),
            (
                &["serve", "--config", "h.toml"],
                Some("h.toml"),
                Command::Serve,
            ),
            (
                &["user", "add", "alice@localhost"],
                None,
                Command::UserAdd {
                    jid: jid("alice@localhost"),
                },
            ),
            (
                &["--config", "/etc/h.toml", "user", "passwd", "a@b"],
                Some("/etc/h.toml"),
                Command::UserPasswd { jid: jid("a@b") },
            ),
            (
                &["user", "del", "a@b", "--config", "x"],
                Some("x"),
                Command::UserDel { jid: jid("a@b") },
            ),
            (&["user", "list"], None, Command::UserList { domain: None }),
            (
                &["user", "list", "example.org"],
                None,
                Command::UserList {
                    domain: Some("example.org".into()),
                },
            ),
            (&["--version"], None, Command::Version),
            (&["-V"], None, Command::Version),
            (&["--help"], None, Command::Help),
            (&["-h"], None, Command::Help),
            (&["user", "--help"], None, Command::Help),
            (&["--version", "--help"], None, Command::Help),
            (&["bogus", "--help"], None, Command::Help),
        ];
        for (args, config, command) in cases {
            let want = Invocation {
                config: config.map(PathBuf::from),
                command: command.clone(),
            };
            assert_eq!(parse(args), Ok(want), "{args:?}");
        }
    }

    #[test]
    fn args_invalid_error_names_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["--verbose"], "unknown option --verbose"),
            (&["-x", "serve"], "unknown option -x"),
            (&["--config"], "--config needs a path"),
            (&["--config="], "--config needs a path"),
            (&["--config", "a", "--config", "b"], "--config given twice"),
            (&["start"], "unknown command start"),
            (&["serve", "now"], "unexpected argument now"),
            (&["user"], "user needs a subcommand"),
            (&["user", "rename", "a@b"], "unknown user subcommand rename"),
            (&["user", "add"], "user add needs a JID"),
            (&["user", "del"], "user del needs a JID"),
            (&["user", "add", "a@b", "c@d"], "unexpected argument c@d"),
            (&["user", "list", "a", "b"], "unexpected argument b"),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn args_check_dns_parse_options_anywhere() {
        let inv = parse(&[
            "--timeout=3",
            "check",
            "dns",
            "Example.org",
            "--nameserver",
            "127.0.0.1:5353",
            "--ca-file",
            "ca.pem",
            "--config",
            "h.toml",
        ])
        .unwrap();
        assert_eq!(inv.config, Some(PathBuf::from("h.toml")));
        let Command::CheckDns(args) = inv.command else {
            panic!("not check dns: {inv:?}");
        };
        assert_eq!(args.domain, "Example.org");
        assert_eq!(args.nameservers, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert_eq!(args.ca_file, Some(PathBuf::from("ca.pem")));
        let Command::CheckDns(args) = parse(&["check", "dns", "a.org"]).unwrap().command else {
            panic!("not check dns");
        };
        assert_eq!(args.timeout, crate::check::DEFAULT_TIMEOUT);
        assert!(args.nameservers.is_empty());
    }

    #[test]
    fn args_check_invalid_error_names_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["check"], "check needs a subcommand: dns"),
            (&["check", "mx", "a.org"], "unknown check subcommand mx"),
            (&["check", "dns"], "check dns needs a DOMAIN"),
            (
                &["check", "dns", "a.org", "b.org"],
                "unexpected argument b.org",
            ),
            (
                &["check", "dns", "a.org", "--timeout"],
                "--timeout needs a value",
            ),
            (
                &["check", "dns", "a.org", "--timeout", "0"],
                "expected seconds",
            ),
            (
                &["check", "dns", "a.org", "--timeout=x"],
                "expected seconds",
            ),
            (
                &["check", "dns", "a.org", "--nameserver", "ns.example"],
                "expected IP",
            ),
            (
                &["user", "list", "--ca-file", "x"],
                "--ca-file is an option of check dns only",
            ),
            (
                &["--nameserver", "127.0.0.1"],
                "--nameserver is an option of check dns only",
            ),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn args_non_utf8_word_refused() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'u', 0xff]);
        assert!(parse_args([bad]).unwrap_err().contains("not valid UTF-8"));
        // A non-UTF-8 config path is fine: it is only a path.
        let path = OsString::from_vec(vec![b'c', 0xff]);
        let inv = parse_args([OsString::from("--config"), path.clone()]).unwrap();
        assert_eq!(inv.config, Some(PathBuf::from(path)));
    }

    #[test]
    fn password_line_strips_line_ending() {
        let read = |s: &str| read_password_line(&mut s.as_bytes());
        assert_eq!(read("secret\n"), Ok(Some("secret".to_owned())));
        assert_eq!(read("secret\r\n"), Ok(Some("secret".to_owned())));
        assert_eq!(read("secret"), Ok(Some("secret".to_owned())));
        assert_eq!(read("a b \n"), Ok(Some("a b ".to_owned())));
        assert_eq!(read("first\nsecond\n"), Ok(Some("first".to_owned())));
        assert_eq!(read("\n"), Ok(Some(String::new())));
        assert_eq!(read(""), Ok(None));
    }

    #[test]
    fn password_line_too_long_refused() {
        let ok = "x".repeat(MAX_PASSWORD_BYTES);
        assert_eq!(
            read_password_line(&mut format!("{ok}\r\n").as_bytes()),
            Ok(Some(ok.clone()))
        );
        let long = format!("{ok}y\n");
        assert!(
            read_password_line(&mut long.as_bytes())
                .unwrap_err()
                .contains("longer than")
        );
    }
}
