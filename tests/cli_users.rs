//! Account administration through the CLI (`hearth --config PATH user ...`), with the server
//! running (the CLI talks to it over the control socket) and stopped (the CLI opens the store
//! itself), checked end to end by logging in with PLAIN over STARTTLS.

mod common;

use std::collections::BTreeSet;

use common::*;

/// Tries PLAIN over STARTTLS; `Ok` on success, `Err(failure element)` otherwise.
fn try_login(s: &Server, jid: &str, password: &str) -> Result<(), String> {
    let (local, domain) = split_jid(jid);
    let mut c = Client::connect(s.c2s_port, domain);
    c.open_stream();
    c.starttls();
    c.open_stream();
    c.auth_plain(local, password)
}

fn assert_not_authorized(r: Result<(), String>, what: &str) {
    match r {
        Ok(()) => panic!("{what}: login succeeded but must fail"),
        Err(f) => assert!(
            has_child(&f, "not-authorized"),
            "{what}: expected <not-authorized/>, got {f}"
        ),
    }
}

fn lines(out: &std::process::Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn user_add_while_running_allows_login() {
    let s = Server::start(Opts::default());
    assert!(s.is_running());
    s.add_user("carol@localhost", "carol pw with spaces é");
    let mut c = s.login("carol@localhost", "carol pw with spaces é", "laptop");
    assert_eq!(c.jid, "carol@localhost/laptop");
    c.ping_server();
}

#[test]
fn user_add_while_stopped_then_start_allows_login() {
    // Nothing has ever run here: the CLI must create data_dir and the store itself.
    let mut s = Server::prepare(Opts::default());
    s.add_user("dave@localhost", "dave-secret");
    s.launch();
    let mut c = s.login("dave@localhost", "dave-secret", "desk");
    c.ping_server();
    drop(c);

    // And after a stop: add another account offline, restart, both can log in.
    let (status, clean) = s.stop().expect("server was running");
    assert!(clean, "server did not exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "server exit status after SIGTERM: {status}"
    );
    s.add_user("erin@localhost", "erin-secret");
    s.launch();
    s.login("dave@localhost", "dave-secret", "desk")
        .ping_server();
    s.login("erin@localhost", "erin-secret", "desk")
        .ping_server();
}

#[test]
fn user_added_while_running_survives_restart() {
    let mut s = Server::start(Opts::default());
    s.add_user("frank@localhost", "frank-secret");
    s.restart();
    s.login("frank@localhost", "frank-secret", "r")
        .ping_server();
}

#[test]
fn user_del_then_login_fails_not_authorized() {
    let s = Server::start(Opts::default().with_users(&[("gina@localhost", "gina-secret")]));
    try_login(&s, "gina@localhost", "gina-secret").expect("login before delete");
    let out = s.cli(&["user", "del", "gina@localhost"], None);
    assert_ok(&out, "user del");
    assert_not_authorized(
        try_login(&s, "gina@localhost", "gina-secret"),
        "login after delete",
    );
}

#[test]
fn user_del_while_stopped_then_login_fails() {
    let mut s = Server::start(Opts::default().with_users(&[("hank@localhost", "hank-secret")]));
    s.stop();
    assert_ok(
        &s.cli(&["user", "del", "hank@localhost"], None),
        "user del (stopped)",
    );
    s.launch();
    assert_not_authorized(
        try_login(&s, "hank@localhost", "hank-secret"),
        "login after offline delete",
    );
}

#[test]
fn user_passwd_replaces_password() {
    let s = Server::start(Opts::default().with_users(&[("ivy@localhost", "old-secret")]));
    let out = s.cli(&["user", "passwd", "ivy@localhost"], Some("new-secret\n"));
    assert_ok(&out, "user passwd");
    assert_not_authorized(try_login(&s, "ivy@localhost", "old-secret"), "old password");
    try_login(&s, "ivy@localhost", "new-secret").expect("new password works");
}

#[test]
fn user_list_prints_accounts_per_domain() {
    let opts = Opts {
        domains: vec!["localhost".to_owned(), "example.net".to_owned()],
        ..Opts::default()
    };
    let s = Server::start(opts.with_users(&[("a@localhost", "pw-a"), ("b@localhost", "pw-b")]));
    // One added while running, on the second domain.
    s.add_user("c@example.net", "pw-c");

    let all = s.cli(&["user", "list"], None);
    assert_ok(&all, "user list");
    assert_eq!(
        lines(&all),
        set(&["a@localhost", "b@localhost", "c@example.net"]),
        "user list output"
    );

    let net = s.cli(&["user", "list", "example.net"], None);
    assert_ok(&net, "user list example.net");
    assert_eq!(lines(&net), set(&["c@example.net"]));

    let local = s.cli(&["user", "list", "localhost"], None);
    assert_ok(&local, "user list localhost");
    assert_eq!(lines(&local), set(&["a@localhost", "b@localhost"]));

    // The second domain really is served: c logs in there.
    try_login(&s, "c@example.net", "pw-c").expect("login on second domain");

    // Deleted accounts leave the list.
    assert_ok(&s.cli(&["user", "del", "b@localhost"], None), "user del b");
    let after = s.cli(&["user", "list"], None);
    assert_ok(&after, "user list after del");
    assert_eq!(lines(&after), set(&["a@localhost", "c@example.net"]));
}

#[test]
fn user_list_while_stopped_matches() {
    let mut s = Server::start(Opts::default().with_users(&[("a@localhost", "pw-a")]));
    s.add_user("z@localhost", "pw-z");
    s.stop();
    let out = s.cli(&["user", "list"], None);
    assert_ok(&out, "user list (stopped)");
    assert_eq!(lines(&out), set(&["a@localhost", "z@localhost"]));
}

#[test]
fn user_add_to_unhosted_domain_fails_naming_it() {
    let s = Server::start(Opts::default());
    let out = s.cli(&["user", "add", "x@nothosted.example"], Some("pw\n"));
    assert!(
        !out.status.success(),
        "adding to an unhosted domain must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothosted.example"),
        "error must name the domain; stderr: {err}"
    );
    // Stopped: the same check against the config, not the running server.
    let mut s = s;
    s.stop();
    let out = s.cli(&["user", "add", "x@nothosted.example"], Some("pw\n"));
    assert!(
        !out.status.success(),
        "adding to an unhosted domain must fail (stopped)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothosted.example"));
    let list = s.cli(&["user", "list"], None);
    assert_ok(&list, "user list");
    assert!(
        lines(&list).is_empty(),
        "nothing was added: {:?}",
        lines(&list)
    );
}

#[test]
fn wrong_password_gets_not_authorized() {
    let s = Server::start(Opts::default().with_users(&[("jo@localhost", "jo-secret")]));
    assert_not_authorized(try_login(&s, "jo@localhost", "not-it"), "wrong password");
    assert_not_authorized(
        try_login(&s, "nobody@localhost", "jo-secret"),
        "unknown user",
    );
}
