"""slixmpp logs in to hearth over STARTTLS and direct TLS with each SASL mechanism it can use
(Python's ssl has no tls-exporter, so the -PLUS mechanisms are covered by the Rust tests), and
authentication failures look the way a client library expects."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from conftest import DOMAIN, USERS, WAIT, Client, login, run

MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize("mech", MECHS)
def test_login_with_mechanism(hearth, mech, direct_tls):
    async def body():
        c = await login(hearth, "alice", mech=mech, direct_tls=direct_tls, resource="mech")
        try:
            assert c.plugin["feature_mechanisms"].mech.name == mech
            assert str(c.boundjid) == f"alice@{DOMAIN}/mech"
            assert c.socket.version() == "TLSv1.3"
        finally:
            await c.close()

    run(body())


def test_login_default_choice_picks_scram_sha_256(hearth):
    """Unrestricted, slixmpp skips the -PLUS mechanisms it cannot bind on TLS 1.3 and must
    land on the strongest remaining one."""

    async def body():
        c = await login(hearth, "bob")
        try:
            assert c.plugin["feature_mechanisms"].mech.name == "SCRAM-SHA-256"
        finally:
            await c.close()

    run(body())


def read_until(sock: socket.socket, marker: bytes, timeout: float = WAIT) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} within {timeout}s; got {data!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}; got {data!r}")
        data += chunk
    return data


def test_plain_not_offered_before_tls(hearth):
    with socket.create_connection(("127.0.0.1", hearth.port), timeout=WAIT) as s:
        s.sendall(
            f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".encode()
        )
        data = read_until(s, b"</stream:features>").decode()
    features = data[data.index("<stream:features"):]
    assert "urn:ietf:params:xml:ns:xmpp-tls" in features, features
    assert "<required/>" in features, features
    assert "<mechanisms" not in features, features
    assert "PLAIN" not in features, features


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_gets_not_authorized(hearth, mech):
    async def body():
        c = Client(f"alice@{DOMAIN}/bad", "not-the-password", mech=mech)
        c.connect("127.0.0.1", hearth.port)
        try:
            await asyncio.wait_for(c.auth_failed.wait(), WAIT)
            assert c.auth_failures[0] == "not-authorized"
            assert not c.started.is_set()
        finally:
            await c.close()

    run(body())


def test_unknown_user_gets_not_authorized(hearth):
    async def body():
        c = Client(f"nobody@{DOMAIN}/bad", USERS["alice"], mech="PLAIN")
        c.connect("127.0.0.1", hearth.port)
        try:
            await asyncio.wait_for(c.auth_failed.wait(), WAIT)
            assert c.auth_failures == ["not-authorized"]
        finally:
            await c.close()

    run(body())
