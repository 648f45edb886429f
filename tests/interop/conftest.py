"""Interop fixtures: run the release `hearth` binary on free loopback ports with a temp config,
create accounts through its CLI, and give tests slixmpp clients that log in to it.

Nothing is built here: the binary comes from $HEARTH_BIN (default target/release/hearth at the
repository root). Every wait is bounded; a failing test prints the server log tail.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
import slixmpp

REPO = pathlib.Path(__file__).resolve().parents[2]
HEARTH_BIN = os.environ.get("HEARTH_BIN", str(REPO / "target" / "release" / "hearth"))
DOMAIN = "localhost"
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}
WAIT = 10.0  # seconds for one login or one expected stanza
QUIET = 1.0  # seconds of silence that count as "nothing came"
# Clients that fetch the roster before initial presence and answer no subscription themselves.
IM = dict(get_roster=True, auto_subscriptions=False)


def free_ports(n: int) -> list[int]:
    """Distinct free loopback ports: all bound at once, then released for the server."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Hearth:
    """One server process with its own folder, config, log and ports."""

    def __init__(self, *, auth_failure_delay_ms: int = 200, limits: dict[str, int] | None = None):
        if not os.access(HEARTH_BIN, os.X_OK):
            pytest.fail(f"hearth binary not found at {HEARTH_BIN} (set HEARTH_BIN or build --release)")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="hearth-interop-"))
        self.config = self.dir / "hearth.toml"
        self.log_path = self.dir / "server.log"
        self.auth_failure_delay_ms = auth_failure_delay_ms
        self.limits = dict(limits or {})
        self.proc: subprocess.Popen | None = None
        self.port = self.tls_port = 0
        self._write_config()

    def _write_config(self) -> None:
        self.port, self.tls_port = free_ports(2)
        self.config.write_text(
            f'domains = ["{DOMAIN}"]\n'
            'data_dir = "data"\n'
            'log_level = "debug"\n\n'
            "[c2s]\n"
            f'listen = ["127.0.0.1:{self.port}"]\n'
            f'listen_tls = ["127.0.0.1:{self.tls_port}"]\n'
            "auth_timeout_secs = 60\n"
            f"auth_failure_delay_ms = {self.auth_failure_delay_ms}\n"
            "max_auth_failures = 3\n\n"
            # These tests are single-domain; federation has its own suite (federation/).
            "[s2s]\n"
            "enabled = false\n\n"
            "[limits]\n"
            "max_connections = 1024\n"
            "max_stanza_bytes = 262144\n"
            "max_depth = 64\n"
            + "".join(f"{k} = {v}\n" for k, v in self.limits.items())
        )

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [HEARTH_BIN, "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )

    def add_user(self, local: str, password: str) -> None:
        r = self.cli("user", "add", f"{local}@{DOMAIN}", stdin=password + "\n")
        assert r.returncode == 0, f"user add {local}: rc={r.returncode} stderr={r.stderr}"

    def start(self) -> None:
        for attempt in range(3):
            log = open(self.log_path, "ab")
            env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
            self.proc = subprocess.Popen(
                [HEARTH_BIN, "--config", str(self.config), "serve"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, env=env,
            )
            log.close()
            if self._wait_ports():
                return
            self.proc = None
            if attempt < 2 and "in use" in self.log_text().lower():
                self._write_config()
                continue
            pytest.fail(f"hearth did not start; log:\n{self.log_text()}")

    def _wait_ports(self) -> bool:
        """100 x 50 ms per port at most; False if the process died or never listened."""
        for port in (self.port, self.tls_port):
            for _ in range(100):
                if self.proc.poll() is not None:
                    return False
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                self.proc.kill()
                self.proc.wait(5)
                return False
        return True

    def kill_hard(self) -> None:
        """SIGKILL, no chance to flush anything: what survives is what was durable."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def hearth(request):
    """A running server with alice and bob (created with the server stopped)."""
    srv = Hearth()
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.start()
    yield srv
    srv.stop()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        tail = "\n".join(srv.log_text().splitlines()[-60:])
        print(f"---- hearth log tail ({srv.log_path}, folder kept) ----\n{tail}")
    else:
        shutil.rmtree(srv.dir, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


# ------------------------------------------------------------------------------ slixmpp side


class Client(slixmpp.ClientXMPP):
    """A slixmpp client pinned to one transport and (optionally) one SASL mechanism, with
    queues and events for what the tests wait on."""

    def __init__(self, jid: str, password: str, *, mech: str | None = None, direct_tls: bool = False,
                 plugins: tuple[str, ...] = (), get_roster: bool = False, initial_presence: bool = True,
                 auto_subscriptions: bool = True):
        super().__init__(jid, password, sasl_mech=mech)
        for name in plugins:
            self.register_plugin(name)
        # Before initial presence: RFC 6121 §2.2, roster pushes only reach resources that asked.
        self.want_roster = get_roster
        self.initial_presence = initial_presence
        if not auto_subscriptions:
            # slixmpp answers subscription requests itself by default (and subscribes back);
            # tests of the state machine decide every answer themselves.
            self.roster.auto_authorize = None
            self.roster.auto_subscribe = False
        # The server's certificate is self-signed.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        # No whitespace pings during short tests.
        self.whitespace_keepalive = False
        self.started = asyncio.Event()
        self.auth_failed = asyncio.Event()
        self.gone = asyncio.Event()
        self.auth_failures: list[str] = []
        self.stream_errors: list[str] = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        # Message errors, body or not (slixmpp's "message" event only fires for a <body>).
        self.message_errors: asyncio.Queue = asyncio.Queue()
        # Roster results and pushes (iq type='set'), in arrival order.
        self.roster_iqs: asyncio.Queue = asyncio.Queue()
        self.roster_result = None
        self.start_error: Exception | None = None
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        self.add_event_handler("disconnected", lambda _e: self.gone.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("message_error", lambda m: self.message_errors.put_nowait(m))
        self.add_event_handler("roster_update", lambda iq: self.roster_iqs.put_nowait(iq))

    async def _on_start(self, _event) -> None:
        if self.want_roster:
            try:
                self.roster_result = await self.get_roster(timeout=WAIT)
            except Exception as e:  # IqError, IqTimeout: the test fails in `login`
                self.start_error = e
        if self.initial_presence:
            self.send_presence()
        self.started.set()

    def _on_failed_auth(self, stanza) -> None:
        self.auth_failures.append(stanza["condition"])
        self.auth_failed.set()

    async def next_message(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def close(self) -> None:
        if self.transport is not None:
            self.disconnect(wait=1.0)
            try:
                await asyncio.wait_for(self.gone.wait(), 3)
            except asyncio.TimeoutError:
                self.abort()
        self.cancel_connection_attempt()


async def login(server: Hearth, local: str, password: str | None = None, *, resource: str = "interop",
                mech: str | None = None, direct_tls: bool = False, **client_opts) -> Client:
    """Connects and waits (bounded) for session_start; fails the test on auth failure.
    `client_opts` go to `Client` (plugins, get_roster, initial_presence, auto_subscriptions)."""
    c = Client(f"{local}@{DOMAIN}/{resource}", password if password is not None else USERS[local],
               mech=mech, direct_tls=direct_tls, **client_opts)
    c.connect("127.0.0.1", server.tls_port if direct_tls else server.port)
    started = asyncio.ensure_future(c.started.wait())
    failed = asyncio.ensure_future(c.auth_failed.wait())
    done, pending = await asyncio.wait({started, failed}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    if started not in done:
        await c.close()
        why = f"auth failures {c.auth_failures}" if failed in done else f"no session within {WAIT}s"
        pytest.fail(f"login {local} ({mech or 'any mech'}, {'direct TLS' if direct_tls else 'STARTTLS'}): {why}\n"
                    f"server log tail:\n" + "\n".join(server.log_text().splitlines()[-30:]))
    if c.start_error is not None:
        await c.close()
        pytest.fail(f"login {local}: roster get failed: {c.start_error!r}")
    return c


class Clients:
    """`async with Clients(server, "alice", ("bob", "b2"), get_roster=True) as (a, b):` logs in
    each (local or (local, resource)) in order, bounded, and closes them all on the way out."""

    def __init__(self, server: Hearth, *specs, **client_opts):
        self.server = server
        self.specs = specs
        self.opts = client_opts
        self.clients: list[Client] = []

    async def __aenter__(self) -> list[Client]:
        for spec in self.specs:
            local, resource = (spec, "r1") if isinstance(spec, str) else spec
            self.clients.append(await login(self.server, local, resource=resource, **self.opts))
        return list(self.clients)

    async def __aexit__(self, *_exc) -> None:
        for c in self.clients:
            await c.close()


def bare(local: str) -> str:
    return f"{local}@{DOMAIN}"


async def next_matching(queue: asyncio.Queue, pred, what: str, timeout: float = WAIT):
    """The first item of `queue` satisfying `pred` (others are dropped), within `timeout`."""
    seen = []

    async def loop():
        while True:
            item = await queue.get()
            if pred(item):
                return item
            seen.append(item)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        shown = "\n".join(str(x) for x in seen[-10:])
        raise AssertionError(f"no {what} within {timeout}s; skipped:\n{shown}") from None


async def none_matching(queue: asyncio.Queue, pred, what: str, quiet: float = 1.0) -> None:
    """Asserts nothing satisfying `pred` arrives on `queue` for `quiet` seconds."""
    deadline = asyncio.get_running_loop().time() + quiet
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return
        assert not pred(item), f"unexpected {what}: {item}"


def presence_pred(frm: str | None = None, ptype: str | None = None):
    """Matches a presence by `from` (a full JID exactly, or a bare JID from any resource) and
    type (slixmpp's view: 'available' for no type)."""
    def pred(p) -> bool:
        if frm is not None:
            got = str(p["from"]) if "/" in frm else p["from"].bare
            if got != frm:
                return False
        return ptype is None or p["type"] == ptype
    return pred


async def wait_presence(client: Client, frm: str | None = None, ptype: str | None = None,
                        timeout: float = WAIT):
    return await next_matching(client.presences, presence_pred(frm, ptype),
                               f"presence from={frm} type={ptype} at {client.boundjid}", timeout)


async def wait_message(client: Client, body: str, timeout: float = WAIT):
    return await next_matching(client.messages, lambda m: m["body"] == body,
                               f"message {body!r} at {client.boundjid}", timeout)


async def wait_push(client: Client, jid: str, timeout: float = WAIT) -> dict:
    """The next roster push (iq set) carrying `jid`: that item's attributes exactly as sent,
    its groups under "groups", and the push's `ver` under "ver"."""
    def pred(iq) -> bool:
        return iq["type"] == "set" and roster_item_xml(iq, jid) is not None
    iq = await next_matching(client.roster_iqs, pred, f"roster push for {jid} at {client.boundjid}",
                             timeout)
    item = roster_item_xml(iq, jid)
    out = dict(item.attrib)
    out["groups"] = [g.text or "" for g in item.iter("{jabber:iq:roster}group")]
    out["ver"] = iq["roster"]["ver"]
    return out


def roster_item_xml(iq, jid: str):
    """The raw <item/> for `jid` in a roster IQ, or None (attributes as the server sent them)."""
    for item in iq.xml.iter("{jabber:iq:roster}item"):
        if item.get("jid") == jid:
            return item
    return None


async def raw_iq(client: Client, itype: str, payload: str, to: str | None = None, timeout: float = WAIT):
    """Sends an IQ with a raw XML payload; returns the result stanza (IqError on an error)."""
    from slixmpp.xmlstream import ET

    iq = client.Iq()
    iq["type"] = itype
    if to is not None:
        iq["to"] = to
    iq.append(ET.fromstring(payload))
    return await iq.send(timeout=timeout)


def run(coro, timeout: float = 60):
    """Runs one async test body on a fresh loop, bounded."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        # slixmpp leaves background tasks (its send filter loop); end them on this loop, or
        # they complain at garbage collection about a closed loop.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        loop.close()
        asyncio.set_event_loop(None)


async def subscribe_to(user, contact) -> None:
    """user asks contact, contact approves; both sides checked (RFC 6121 §3.1)."""
    u, c = user.boundjid.bare, contact.boundjid.bare
    user.send_presence(pto=c, ptype="subscribe")
    await next_matching(contact.presences, lambda p: p["type"] == "subscribe" and str(p["from"]) == u,
                        f"subscribe from {u} at {c}")
    contact.send_presence(pto=u, ptype="subscribed")
    await next_matching(user.presences, lambda p: p["type"] == "subscribed" and str(p["from"]) == c,
                        f"subscribed from {c} at {u}")


async def make_mutual(a, b) -> None:
    """Both ways; for clients with a roster, waits until each has the other as 'both' and
    then forgets the pushes so far, so that a test's next wait sees only new ones."""
    await subscribe_to(a, b)
    await subscribe_to(b, a)
    for x, y in ((a, b), (b, a)):
        if x.want_roster:
            jid = y.boundjid.bare
            await next_matching(
                x.roster_iqs,
                lambda iq, jid=jid: iq["type"] == "set" and (i := roster_item_xml(iq, jid)) is not None
                and i.get("subscription") == "both",
                f"push of {jid} as 'both' at {x.boundjid}")
            drain(x.roster_iqs)


def drain(queue: asyncio.Queue) -> list:
    """Takes everything queued so far."""
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def send_with_id(c: Client, to: str, body: str, mid: str, mtype: str = "chat") -> None:
    """A message with a chosen id, so that an error bounced for it can be matched."""
    m = c.make_message(mto=to, mbody=body, mtype=mtype)
    m["id"] = mid
    m.send()
