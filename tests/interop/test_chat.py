"""Two slixmpp users talk through hearth: messages both ways, directed presence (rosters and
subscriptions do not exist yet), and a second login on the same resource replacing the first."""
from __future__ import annotations

import asyncio

from conftest import DOMAIN, WAIT, login, run


async def wait_presence_from(client, jid: str, timeout: float = WAIT):
    async def loop():
        while True:
            p = await client.presences.get()
            if str(p["from"]) == jid:
                return p

    return await asyncio.wait_for(loop(), timeout)


async def wait_message_with(client, body: str, timeout: float = WAIT):
    async def loop():
        while True:
            m = await client.messages.get()
            if m["body"] == body:
                return m

    return await asyncio.wait_for(loop(), timeout)


def test_messages_both_ways(hearth):
    async def body():
        alice = await login(hearth, "alice", resource="a")
        bob = await login(hearth, "bob", resource="b")
        try:
            alice.send_message(mto=bob.boundjid.full, mbody="hello bob", mtype="chat")
            m = await wait_message_with(bob, "hello bob")
            assert str(m["from"]) == f"alice@{DOMAIN}/a"
            assert m["type"] == "chat"

            bob.send_message(mto=f"alice@{DOMAIN}", mbody="hello alice", mtype="chat")
            m = await wait_message_with(alice, "hello alice")
            assert str(m["from"]) == f"bob@{DOMAIN}/b"
        finally:
            await alice.close()
            await bob.close()

    run(body())


def test_directed_presence_both_ways(hearth):
    async def body():
        alice = await login(hearth, "alice", resource="a")
        bob = await login(hearth, "bob", resource="b")
        try:
            alice.send_presence(pto=bob.boundjid.full, pstatus="alice here", pshow="chat")
            p = await wait_presence_from(bob, f"alice@{DOMAIN}/a")
            assert p["status"] == "alice here"
            assert p["show"] == "chat"

            bob.send_presence(pto=alice.boundjid.full, pstatus="bob here")
            p = await wait_presence_from(alice, f"bob@{DOMAIN}/b")
            assert p["status"] == "bob here"
            assert p["type"] == "available"
        finally:
            await alice.close()
            await bob.close()

    run(body())


def test_same_resource_replaces_first_session(hearth):
    async def body():
        first = await login(hearth, "alice", resource="dup")
        second = await login(hearth, "alice", resource="dup")
        bob = await login(hearth, "bob", resource="b")
        try:
            await asyncio.wait_for(first.gone.wait(), WAIT)
            assert "conflict" in first.stream_errors
            assert second.is_connected()

            bob.send_message(mto=f"alice@{DOMAIN}/dup", mbody="who gets this", mtype="chat")
            m = await wait_message_with(second, "who gets this")
            assert str(m["from"]) == f"bob@{DOMAIN}/b"
        finally:
            for c in (first, second, bob):
                await c.close()

    run(body())
