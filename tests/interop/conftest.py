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
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
WAIT = 10.0  # seconds for one login or one expected stanza


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

    def __init__(self, *, auth_failure_delay_ms: int = 200):
        if not os.access(HEARTH_BIN, os.X_OK):
            pytest.fail(f"hearth binary not found at {HEARTH_BIN} (set HEARTH_BIN or build --release)")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="hearth-interop-"))
        self.config = self.dir / "hearth.toml"
        self.log_path = self.dir / "server.log"
        self.auth_failure_delay_ms = auth_failure_delay_ms
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
            "[limits]\n"
            "max_connections = 1024\n"
            "max_stanza_bytes = 262144\n"
            "max_depth = 64\n"
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

    def __init__(self, jid: str, password: str, *, mech: str | None = None, direct_tls: bool = False):
        super().__init__(jid, password, sasl_mech=mech)
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
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", self._on_failed_auth)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))
        self.add_event_handler("disconnected", lambda _e: self.gone.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))

    async def _on_start(self, _event) -> None:
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
                mech: str | None = None, direct_tls: bool = False) -> Client:
    """Connects and waits (bounded) for session_start; fails the test on auth failure."""
    c = Client(f"{local}@{DOMAIN}/{resource}", password if password is not None else USERS[local],
               mech=mech, direct_tls=direct_tls)
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
    return c


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
