"""Stream management (XEP-0198) seen by slixmpp's xep_0198 plugin: a connection killed without
</stream:stream> and resumed (on the other port) gets every message sent meanwhile exactly once; a session not
resumed within the window finds its messages offline (and its contacts see it leave); acks are
counted right in both directions across 1,000 stanzas."""
from __future__ import annotations

import asyncio
import shutil

import pytest

from conftest import (DOMAIN, QUIET, USERS, WAIT, Clients, Hearth, bare, login, none_matching, run,
                      wait_message, wait_presence)

SM = ("xep_0198",)


class SmHearth(Hearth):
    """A server with its own resumption window."""

    def __init__(self, resume_timeout_secs: int, max_unacked_stanzas: int = 500, **kw):
        self.resume_timeout_secs = resume_timeout_secs
        self.max_unacked_stanzas = max_unacked_stanzas
        super().__init__(**kw)

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config.read_text()
        self.config.write_text(text.replace(
            "[c2s]\n", f"[c2s]\nresume_timeout_secs = {self.resume_timeout_secs}\n"
            f"max_unacked_stanzas = {self.max_unacked_stanzas}\n"
            # A client past the bound gets this long to acknowledge (default 30 s).
            "ack_timeout_secs = 1\n", 1))


def server(request, resume_timeout_secs: int, max_unacked_stanzas: int = 500) -> SmHearth:
    srv = SmHearth(resume_timeout_secs, max_unacked_stanzas)
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.start()

    def fin():
        srv.stop()
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        if failed:
            tail = "\n".join(srv.log_text().splitlines()[-60:])
            print(f"---- hearth log tail ({srv.log_path}, folder kept) ----\n{tail}")
        else:
            shutil.rmtree(srv.dir, ignore_errors=True)

    request.addfinalizer(fin)
    return srv


async def sm_login(srv, local: str, resource: str):
    """Logs in with the xep_0198 plugin and waits for <enabled/> (with a resumption id)."""
    enabled = asyncio.Event()
    c = await login(srv, local, resource=resource, plugins=SM)
    c.add_event_handler("sm_enabled", lambda _e: enabled.set())
    if c.plugin["xep_0198"].sm_id is None:
        await asyncio.wait_for(enabled.wait(), WAIT)
    assert c.plugin["xep_0198"].sm_id, "no resumption id in <enabled/>"
    return c


async def kill(c) -> None:
    """Drops the connection without </stream:stream> (TCP/TLS torn down) and waits for it."""
    c.gone.clear()
    c.abort()
    await asyncio.wait_for(c.gone.wait(), WAIT)


async def resume(srv, c, direct_tls: bool = False) -> None:
    """Reconnects the same client object (on the direct TLS port if asked, whichever port the
    session started on); slixmpp sends <resume/> and waits for <resumed/>."""
    resumed = asyncio.Event()
    failed = asyncio.Event()
    c.add_event_handler("session_resumed", lambda _e: resumed.set(), disposable=True)
    c.add_event_handler("sm_failed", lambda _e: failed.set(), disposable=True)
    c.enable_direct_tls = direct_tls
    c.enable_starttls = not direct_tls
    c.connect("127.0.0.1", srv.tls_port if direct_tls else srv.port)
    done, pending = await asyncio.wait(
        {asyncio.ensure_future(resumed.wait()), asyncio.ensure_future(failed.wait())},
        timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    assert resumed.is_set(), "no <resumed/> (failed or timed out)"


async def settle(c) -> None:
    """A ping round trip: the server has handled everything c sent before it."""
    from conftest import raw_iq
    await raw_iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)


def bodies(queue: asyncio.Queue) -> list[str]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait()["body"])
    return out


def test_sm_killed_connection_resumed_gets_every_message_once(request):
    srv = server(request, 60)

    async def body():
        alice = await sm_login(srv, "alice", "phone")
        try:
            async with Clients(srv, ("bob", "b")) as (bob,):
                to = f"{bare('alice')}/phone"
                for i in range(3):
                    bob.send_message(mto=to, mbody=f"before {i}", mtype="chat")
                for i in range(3):
                    await wait_message(alice, f"before {i}")
                await kill(alice)
                await asyncio.sleep(0.3)  # the server has seen the connection go
                for i in range(5):
                    bob.send_message(mto=to, mbody=f"during {i}", mtype="chat")
                await settle(bob)
                # The session is still there: nothing bounced.
                await none_matching(bob.message_errors, lambda m: True, "an error for a kept session", 0.3)
                # Resumed on the other port (direct TLS; the session started with STARTTLS).
                await resume(srv, alice, direct_tls=True)
                for i in range(5):
                    await wait_message(alice, f"during {i}")
                bob.send_message(mto=to, mbody="after", mtype="chat")
                await wait_message(alice, "after")
                await asyncio.sleep(QUIET)
                # Each exactly once: nothing received before the kill came again, and nothing twice.
                rest = bodies(alice.messages)
                assert rest == [], f"delivered again: {rest}"
        finally:
            await alice.close()

    run(body())


def test_sm_not_resumed_in_time_messages_offline(request):
    srv = server(request, 2)

    async def body():
        alice = await sm_login(srv, "alice", "phone")
        async with Clients(srv, ("bob", "b")) as (bob,):
            alice.send_presence(pto=f"{bare('bob')}/b")
            await wait_presence(bob, f"{bare('alice')}/phone", "available")
            await kill(alice)
            for i in range(3):
                bob.send_message(mto=f"{bare('alice')}/phone", mbody=f"late {i}", mtype="chat")
            await settle(bob)
            # Not before the window closes ...
            await none_matching(bob.presences, lambda p: p["type"] == "unavailable", "unavailable too early", 1.0)
            # ... then unavailable goes out.
            await wait_presence(bob, f"{bare('alice')}/phone", "unavailable", timeout=5)
            await none_matching(bob.message_errors, lambda m: True, "a bounced message", 0.3)
        # A fresh login finds every message offline, once.
        async with Clients(srv, ("alice", "desk")) as (alice2,):
            for i in range(3):
                await wait_message(alice2, f"late {i}")
            await asyncio.sleep(QUIET)
            assert bodies(alice2.messages) == []
        async with Clients(srv, ("alice", "again")) as (alice3,):
            await none_matching(alice3.messages, lambda m: True, "an offline message twice", QUIET)

    run(body())


def test_sm_acks_counted_across_1000_stanzas(request):
    """1,000 messages each way between two managed sessions: the server's acks match what
    slixmpp sent, slixmpp's handled count matches what the server sent (a resumption after
    a kill then resends nothing and reports slixmpp's count). The unacked bound is raised
    above the burst: on a loaded machine slixmpp answers <r/> too late to keep the queue under
    the default 500, and what happens at the bound has its own test below."""
    n = 1000
    srv = server(request, 60, max_unacked_stanzas=2 * n + 100)

    async def body():
        alice = await sm_login(srv, "alice", "a")
        bob = await sm_login(srv, "bob", "b")
        try:
            for i in range(n):
                alice.send_message(mto=f"{bare('bob')}/b", mbody=f"a{i}", mtype="chat")
                bob.send_message(mto=f"{bare('alice')}/a", mbody=f"b{i}", mtype="chat")
                if i % 100 == 99:
                    await asyncio.sleep(0)
            for i in range(n):
                m = await asyncio.wait_for(alice.messages.get(), WAIT)
                assert m["body"] == f"b{i}", (i, m["body"])
                m = await asyncio.wait_for(bob.messages.get(), WAIT)
                assert m["body"] == f"a{i}", (i, m["body"])
            sm_a = alice.plugin["xep_0198"]
            # The server's ack of what alice sent.
            acked = asyncio.Event()
            alice.add_event_handler("stanza_acked", lambda _s: None)
            sm_a.request_ack()
            for _ in range(50):
                if sm_a.last_ack == sm_a.seq and not sm_a.unacked_queue:
                    acked.set()
                    break
                await asyncio.sleep(0.1)
            assert acked.is_set(), f"server acked {sm_a.last_ack}, alice sent {sm_a.seq}"
            assert sm_a.seq >= n
            # What the server sent alice: slixmpp counted every stanza (n messages at least).
            handled = sm_a.handled
            assert handled >= n, handled
            assert alice.stream_errors == [] and bob.stream_errors == []
            await kill(alice)
            resumed_h = []
            alice.add_event_handler("session_resumed", lambda s: resumed_h.append(s["h"]), disposable=True)
            await resume(srv, alice)
            # <resumed h/> is the number of stanzas the server handled from alice.
            assert resumed_h == [sm_a.seq], (resumed_h, sm_a.seq)
            await asyncio.sleep(QUIET)
            assert bodies(alice.messages) == [], "the server resent what alice had acknowledged"
            assert sm_a.handled == handled, "stanzas resent after resumption"
        finally:
            await alice.close()
            await bob.close()

    run(body(), timeout=120)


def test_sm_unacked_bound_closes_stream_then_resumable(request):
    """A client that never acknowledges: past [c2s] max_unacked_stanzas (20 here) the server
    asks for an ack, and when none comes within ack_timeout_secs (1 here) ends the stream
    with policy-violation and keeps the session as if the connection had dropped; resuming
    with slixmpp's h loses nothing and repeats nothing."""
    srv = server(request, 60, max_unacked_stanzas=20)

    async def body():
        alice = await sm_login(srv, "alice", "phone")
        # Deaf to <r/>: slixmpp never sends <a/>.
        alice.remove_handler("Stream Management Request Ack")
        try:
            async with Clients(srv, ("bob", "b")) as (bob,):
                to = f"{bare('alice')}/phone"
                for i in range(30):
                    bob.send_message(mto=to, mbody=f"n{i}", mtype="chat")
                await asyncio.wait_for(alice.gone.wait(), WAIT)
                assert "policy-violation" in alice.stream_errors, alice.stream_errors
                got = bodies(alice.messages)
                # All 30 fit under the hard cap (3 x 20), so they are sent before the close.
                assert got == [f"n{i}" for i in range(len(got))] and 0 < len(got) <= 30, got
                await settle(bob)
                await none_matching(bob.message_errors, lambda m: True, "a bounced message", 0.3)
                await resume(srv, alice)
                rest = []
                while len(got) + len(rest) < 30:
                    rest.append((await asyncio.wait_for(alice.messages.get(), WAIT))["body"])
                assert got + rest == [f"n{i}" for i in range(30)], (got, rest)
                await asyncio.sleep(QUIET)
                assert bodies(alice.messages) == []
        finally:
            await alice.close()

    run(body())
