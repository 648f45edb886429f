"""Offline messages (XEP-0160, RFC 6121 §8.5.2) seen by slixmpp: stored while the recipient
has no available resource, delivered in order with a urn:xmpp:delay stamp at the next
available presence, once only; types that must not be stored are not; a full queue refuses
with service-unavailable."""
from __future__ import annotations

import asyncio
import datetime as dt
import shutil

import pytest

from conftest import (DOMAIN, QUIET, USERS, Clients, Hearth, bare, login, next_matching, none_matching, send_with_id,
                      raw_iq, run, wait_message)

NS_DELAY = "{urn:xmpp:delay}delay"


async def settle(c) -> None:
    """A ping round trip: the single-threaded server has handled everything c sent before it."""
    await raw_iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)


def delay_of(m) -> tuple[dt.datetime, str | None]:
    d = m.xml.find(NS_DELAY)
    assert d is not None, f"offline message without <delay xmlns='urn:xmpp:delay'/>: {m}"
    stamp = d.get("stamp")
    assert stamp, f"delay without stamp: {m}"
    # XEP-0082 DateTime, UTC: CCYY-MM-DDThh:mm:ss[.sss]Z (or an explicit offset).
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert when.tzinfo is not None, f"stamp without a time zone: {stamp}"
    return when, d.get("from")


def test_offline_messages_delivered_in_order_with_delay(hearth):
    async def body():
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        async with Clients(hearth, ("alice", "r1")) as (alice,):
            for i in range(1, 6):
                alice.send_message(mto=bare("bob"), mbody=f"offline {i}", mtype="chat")
            await settle(alice)
            # No error came back for any of them.
            await none_matching(alice.message_errors, lambda m: m["type"] == "error", "error for an offline message", 0.3)
        after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        await asyncio.sleep(1.1)  # so a stamp taken at delivery would show

        async with Clients(hearth, ("bob", "r1")) as (bob,):
            got = []
            for _ in range(5):
                got.append(await next_matching(bob.messages, lambda m: m["body"].startswith("offline "),
                                               "an offline message"))
            assert [m["body"] for m in got] == [f"offline {i}" for i in range(1, 6)]
            stamps = []
            for m in got:
                assert str(m["from"]) == f"{bare('alice')}/r1", m
                assert m["type"] == "chat", m
                when, frm = delay_of(m)
                assert before <= when <= after, f"stamp {when} not within the send window {before}..{after}"
                if frm is not None:
                    assert frm == DOMAIN, f"delay from {frm!r}, expected the server {DOMAIN!r}"
                stamps.append(when)
            assert stamps == sorted(stamps), stamps
            await none_matching(bob.messages, lambda m: m["body"].startswith("offline "), "a sixth message", QUIET)

        # Delivered once: the next login gets nothing.
        async with Clients(hearth, ("bob", "again")) as (bob,):
            await none_matching(bob.messages, lambda m: m["body"].startswith("offline "),
                                "an offline message delivered twice", QUIET)

    run(body())


def test_offline_messages_wait_for_available_presence(hearth):
    """XEP-0160 §2: delivered when the recipient next sends available presence, not at bind."""
    async def body():
        async with Clients(hearth, ("alice", "r1")) as (alice,):
            alice.send_message(mto=bare("bob"), mbody="wait for presence", mtype="chat")
            await settle(alice)
        bob = await login(hearth, "bob", resource="r1", initial_presence=False)
        try:
            await none_matching(bob.messages, lambda m: m["body"] == "wait for presence",
                                "offline message before initial presence", QUIET)
            bob.send_presence()
            m = await wait_message(bob, "wait for presence")
            delay_of(m)
        finally:
            await bob.close()

    run(body())


def test_offline_normal_stored_headline_not_groupchat_refused(hearth):
    """XEP-0160 §3 / RFC 6121 §8.5.2.2.1: normal is stored, headline is dropped silently,
    groupchat bounces with an error."""
    async def body():
        async with Clients(hearth, ("alice", "r1")) as (alice,):
            alice.send_message(mto=bare("bob"), mbody="a headline", mtype="headline")
            alice.send_message(mto=bare("bob"), mbody="a normal one", mtype="normal")
            alice.send_message(mto=bare("bob"), mbody="a groupchat one", mtype="groupchat")
            err = await next_matching(alice.message_errors, lambda m: m["type"] == "error", "error for groupchat")
            assert err["error"]["condition"] == "service-unavailable", err
            await settle(alice)
            await none_matching(alice.message_errors, lambda m: m["type"] == "error", "error for headline/normal", 0.3)
        async with Clients(hearth, ("bob", "r1")) as (bob,):
            m = await wait_message(bob, "a normal one")
            delay_of(m)
            await none_matching(bob.messages, lambda m: m["body"] in ("a headline", "a groupchat one"),
                                "stored headline or groupchat", QUIET)

    run(body())


def test_message_to_unknown_account_bounces(hearth):
    """RFC 6121 §8.5.1: no such account: service-unavailable, nothing stored."""
    async def body():
        async with Clients(hearth, ("alice", "r1")) as (alice,):
            alice.send_message(mto=bare("nobody"), mbody="to nobody", mtype="chat")
            err = await next_matching(alice.message_errors, lambda m: m["type"] == "error", "error for nobody")
            assert err["error"]["condition"] == "service-unavailable", err
            assert str(err["from"]) == bare("nobody"), err

    run(body())


@pytest.fixture
def small_queue_hearth(request):
    srv = Hearth(limits={"max_offline_per_account": 3})
    for local, pw in USERS.items():
        srv.add_user(local, pw)
    srv.start()
    yield srv
    srv.stop()
    if not (getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed):
        shutil.rmtree(srv.dir, ignore_errors=True)
    else:
        print("\n".join(srv.log_text().splitlines()[-60:]))


def test_full_offline_queue_refuses_with_resource_constraint(small_queue_hearth):
    """A full queue refuses the overflow with resource-constraint (the issue's choice; XEP-0160
    suggests service-unavailable, ejabberd also says resource-constraint); the stored ones remain."""
    async def body():
        async with Clients(small_queue_hearth, ("alice", "r1")) as (alice,):
            for i in range(1, 5):
                send_with_id(alice, bare("bob"), f"queued {i}", f"q{i}")
            err = await next_matching(alice.message_errors, lambda m: m["type"] == "error", "error for the 4th message")
            assert err["id"] == "q4", err
            assert err["error"]["condition"] == "resource-constraint", err
            await settle(alice)
            await none_matching(alice.message_errors, lambda m: m["type"] == "error", "a second error", 0.3)
        async with Clients(small_queue_hearth, ("bob", "r1")) as (bob,):
            got = [await next_matching(bob.messages, lambda m: m["body"].startswith("queued "), "queued message")
                   for _ in range(3)]
            assert [m["body"] for m in got] == ["queued 1", "queued 2", "queued 3"]
            await none_matching(bob.messages, lambda m: m["body"] == "queued 4", "the refused message", QUIET)

    run(body())


def test_offline_messages_survive_restart(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1")) as (alice,):
            alice.send_message(mto=bare("bob"), mbody="across a restart", mtype="chat")
            await settle(alice)

    run(body())
    hearth.restart()

    async def after():
        async with Clients(hearth, ("bob", "r1")) as (bob,):
            m = await wait_message(bob, "across a restart")
            delay_of(m)

    run(after())
