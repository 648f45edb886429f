"""Presence broadcast (RFC 6121 §4) seen by slixmpp: contacts see it, strangers do not, probes
answer a new session with its contacts' presence, one-way subscriptions leak nothing the
other way, and a session that drops is announced unavailable."""
from __future__ import annotations

import asyncio

from conftest import (IM, QUIET, Clients, bare, login, make_mutual, next_matching, none_matching, run,
                      subscribe_to, wait_presence)


def status_is(text: str):
    return lambda p: p["status"] == text


def test_presence_seen_by_contacts_not_by_strangers(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), ("carol", "r1"), **IM) as (alice, bob, carol):
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            alice.send_presence(pshow="dnd", pstatus="alice busy")
            p = await next_matching(bob.presences, status_is("alice busy"), "alice's broadcast at bob")
            assert str(p["from"]) == alice.boundjid.full, p
            assert p["show"] == "dnd", p
            # carol has no subscription: nothing of alice's reaches her.
            await none_matching(carol.presences, lambda p: p["from"].bare == bare("alice"),
                                "presence from alice at carol (no subscription)", QUIET)
            # Nor does alice's going offline.
            await alice.close()
            await wait_presence(bob, alice.boundjid.full, "unavailable")
            await none_matching(carol.presences, lambda p: p["from"].bare == bare("alice"),
                                "unavailable from alice at carol", QUIET)

    run(body())


def test_initial_presence_gets_contacts_presence_by_probe(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            await make_mutual(alice, bob)
        # bob online with a status; carol online, a stranger; alice logs in afresh.
        async with Clients(hearth, ("bob", "home"), ("carol", "r1"), **IM) as (bob, carol):
            bob.send_presence(pstatus="bob at home", pshow="away")
            carol.send_presence(pstatus="carol here")
            await asyncio.sleep(0.3)
            alice = await login(hearth, "alice", resource="new", **IM)
            try:
                p = await next_matching(alice.presences, status_is("bob at home"), "bob's presence (probe) at alice")
                assert str(p["from"]) == f"{bare('bob')}/home", p
                assert p["show"] == "away", p
                # bob also hears alice's initial presence.
                await wait_presence(bob, alice.boundjid.full, "available")
                await none_matching(alice.presences, lambda p: p["from"].bare == bare("carol"),
                                    "carol's presence at alice (no subscription)", QUIET)
            finally:
                await alice.close()

    run(body())


def test_own_resources_see_each_other(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), **IM) as (r1,):
            r2 = await login(hearth, "alice", resource="r2", **IM)
            try:
                # §4.2.2: the new resource's initial presence reaches r1, and r2 learns r1's.
                await wait_presence(r1, r2.boundjid.full, "available")
                await wait_presence(r2, r1.boundjid.full, "available")
                r1.send_presence(pstatus="r1 changed")
                await next_matching(r2.presences, status_is("r1 changed"), "r1's change at r2")
            finally:
                await r2.close()
            await wait_presence(r1, r2.boundjid.full, "unavailable")

    run(body())


def test_one_way_subscription_leaks_nothing_back(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            # alice is subscribed to bob ('to'); bob has 'from' only.
            await subscribe_to(alice, bob)
            await asyncio.sleep(0.3)
            bob.send_presence(pstatus="bob visible to alice")
            await next_matching(alice.presences, status_is("bob visible to alice"), "bob's status at alice")
            alice.send_presence(pstatus="alice hidden from bob")
            await none_matching(bob.presences, status_is("alice hidden from bob"),
                                "alice's broadcast at bob (bob is not subscribed)", QUIET)

    run(body())


def test_dropped_session_announced_unavailable(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            # No </stream:stream>, no unavailable presence: the TCP connection just goes.
            alice.abort()
            p = await wait_presence(bob, alice.boundjid.full, "unavailable")
            assert str(p["to"]).startswith(bare("bob")), p

    run(body())


def test_presence_to_stranger_full_jid_is_directed_only(hearth):
    """RFC 6121 §4.6: directed presence reaches its target, and that target alone is told
    when the sender goes offline."""
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), ("carol", "r1"), **IM) as (alice, bob, carol):
            alice.send_presence(pto=carol.boundjid.full, pstatus="only for carol")
            await next_matching(carol.presences, status_is("only for carol"), "directed presence at carol")
            await alice.close()
            await wait_presence(carol, alice.boundjid.full, "unavailable")
            await none_matching(bob.presences, lambda p: p["from"].bare == bare("alice"),
                                "alice's presence at bob", QUIET)

    run(body())
