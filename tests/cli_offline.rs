//! `hearth user …` and the flags, run as the real binary with no server running (the commands
//! open the database directly) or against a stand-in control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "hearth-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `hearth ARGS` in `cwd` with `stdin` piped in.
fn hearth(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading (e.g. on a bad JID); a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit code, showing the output when it is not the expected one.
fn expect(out: &Output, code: i32) -> (String, String) {
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "stdout: {so}\nstderr: {se}");
    (so, se)
}

/// A config file hosting two domains with its data in `data/` beside it.
fn config_file(dir: &TempDir) -> String {
    let path = dir.0.join("hearth.toml");
    std::fs::write(
        &path,
        "domains = [\"localhost\", \"example.org\"]\ndata_dir = \"data\"\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn version_flag_prints_version() {
    let dir = TempDir::new("version");
    let (so, _) = expect(&hearth(&dir.0, &["--version"], ""), 0);
    assert_eq!(so, format!("hearth {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_flag_prints_usage() {
    let dir = TempDir::new("help");
    let (so, _) = expect(&hearth(&dir.0, &["--help"], ""), 0);
    assert!(so.contains("user add JID"), "{so}");
}

#[test]
fn unknown_argument_exits_2_with_usage() {
    let dir = TempDir::new("unknown");
    let (so, se) = expect(&hearth(&dir.0, &["--bogus"], ""), 2);
    assert!(so.is_empty(), "{so}");
    assert!(se.contains("unknown option --bogus"), "{se}");
    assert!(se.contains("Usage:"), "{se}");
    let (_, se) = expect(&hearth(&dir.0, &["user", "frob", "a@b"], ""), 2);
    assert!(se.contains("unknown user subcommand frob"), "{se}");
}

#[test]
fn user_add_unhosted_domain_exits_1() {
    let dir = TempDir::new("unhosted");
    let (_, se) = expect(
        &hearth(&dir.0, &["user", "add", "alice@nowhere"], "secret\n"),
        1,
    );
    assert!(
        se.contains("alice@nowhere: domain nowhere is not hosted here (hosted: localhost)"),
        "{se}"
    );
    // Refused before touching anything.
    assert!(!dir.0.join("hearth-data").exists());
}

#[test]
fn user_add_empty_password_exits_1() {
    let dir = TempDir::new("emptypw");
    let (_, se) = expect(
        &hearth(&dir.0, &["user", "add", "alice@localhost"], "\n"),
        1,
    );
    assert!(se.contains("the password is empty"), "{se}");
    let (_, se) = expect(&hearth(&dir.0, &["user", "add", "alice@localhost"], ""), 1);
    assert!(se.contains("no password on standard input"), "{se}");
}

#[test]
fn user_del_missing_account_exits_1() {
    let dir = TempDir::new("delmissing");
    let (_, se) = expect(&hearth(&dir.0, &["user", "del", "bob@localhost"], ""), 1);
    assert!(se.contains("bob@localhost: no such account"), "{se}");
}

#[test]
fn user_list_database_in_use_exits_1() {
    let dir = TempDir::new("inuse");
    let data = dir.0.join("hearth-data");
    std::fs::create_dir(&data).unwrap();
    let _held = hearth::store::RedbStore::open(&data.join("hearth.redb"), 1 << 20).unwrap();
    let (_, se) = expect(&hearth(&dir.0, &["user", "list"], ""), 1);
    assert!(
        se.contains("the database is in use by a running server"),
        "{se}"
    );
}

#[test]
fn user_list_stale_socket_falls_back_to_database() {
    let dir = TempDir::new("stale");
    let data = dir.0.join("hearth-data");
    std::fs::create_dir(&data).unwrap();
    // A socket file nobody listens on, as a killed server leaves behind.
    drop(UnixListener::bind(data.join("control.sock")).unwrap());
    let (so, _) = expect(&hearth(&dir.0, &["user", "list"], ""), 0);
    assert_eq!(so, "");
    assert!(data.join("hearth.redb").exists());
}

#[test]
fn user_del_running_server_gets_request_over_socket() {
    let dir = TempDir::new("socket");
    let data = dir.0.join("hearth-data");
    std::fs::create_dir(&data).unwrap();
    let listener = UnixListener::bind(data.join("control.sock")).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(b"ok\ndeleted bob@localhost\n").unwrap();
        line
    });
    let (so, _) = expect(&hearth(&dir.0, &["user", "del", "Bob@LocalHost"], ""), 0);
    assert_eq!(so, "deleted bob@localhost\n");
    assert_eq!(server.join().unwrap(), "user-del bob@localhost\n");
    // The server had the database; the CLI did not open one.
    assert!(!data.join("hearth.redb").exists());
}

#[test]
fn user_error_reply_from_server_exits_1() {
    let dir = TempDir::new("socketerr");
    let data = dir.0.join("hearth-data");
    std::fs::create_dir(&data).unwrap();
    let listener = UnixListener::bind(data.join("control.sock")).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(b"error: nobody@localhost: no such account\n")
            .unwrap();
    });
    let (_, se) = expect(&hearth(&dir.0, &["user", "del", "nobody@localhost"], ""), 1);
    assert!(se.contains("nobody@localhost: no such account"), "{se}");
    server.join().unwrap();
}

// The tests below derive credentials (sasl) and, with --config, load a file (config).

#[test]
fn user_add_builtin_defaults_creates_private_data_dir() {
    let dir = TempDir::new("builtin");
    let (so, _) = expect(
        &hearth(&dir.0, &["user", "add", "alice@localhost"], "secret\n"),
        0,
    );
    assert_eq!(so, "created alice@localhost\n");
    let data = dir.0.join("hearth-data");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(data.join("hearth.redb").exists());
    let (so, _) = expect(&hearth(&dir.0, &["user", "list"], ""), 0);
    assert_eq!(so, "alice@localhost\n");
}

#[test]
fn user_add_list_passwd_del_with_config_file() {
    let dir = TempDir::new("lifecycle");
    let cfg = config_file(&dir);
    let run = |args: &[&str], stdin: &str| {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        hearth(&dir.0, &all, stdin)
    };

    let (so, _) = expect(&run(&["user", "add", "alice@localhost"], "pw1\r\n"), 0);
    assert_eq!(so, "created alice@localhost\n");
    let (so, _) = expect(&run(&["user", "add", "bob@example.org"], "pw2\n"), 0);
    assert_eq!(so, "created bob@example.org\n");
    assert!(dir.0.join("data").join("hearth.redb").exists());

    let (_, se) = expect(&run(&["user", "add", "alice@localhost"], "pw3\n"), 1);
    assert!(se.contains("alice@localhost already exists"), "{se}");

    let (so, _) = expect(&run(&["user", "list"], ""), 0);
    assert_eq!(so, "alice@localhost\nbob@example.org\n");
    let (so, _) = expect(&run(&["user", "list", "example.org"], ""), 0);
    assert_eq!(so, "bob@example.org\n");

    let (so, _) = expect(&run(&["user", "passwd", "alice@localhost"], "pw4\n"), 0);
    assert_eq!(so, "changed the password of alice@localhost\n");
    let (_, se) = expect(&run(&["user", "passwd", "carol@localhost"], "pw5\n"), 1);
    assert!(se.contains("carol@localhost: no such account"), "{se}");

    let (so, _) = expect(&run(&["user", "del", "alice@localhost"], ""), 0);
    assert_eq!(so, "deleted alice@localhost\n");
    let (so, _) = expect(&run(&["user", "list"], ""), 0);
    assert_eq!(so, "bob@example.org\n");
}
