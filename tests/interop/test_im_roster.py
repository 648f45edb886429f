"""Rosters and subscriptions (RFC 6121 §2, §3) seen by slixmpp: roster get/set/remove with
pushes, every subscription transition (request, approval, mutual, unsubscribe, cancel, denial,
pre-approval), pending requests delivered again at the next login, and roster versioning that
returns only the delta.

Every client here answers nothing on its own (`auto_subscriptions=False`): the test decides
each answer, so each push and each presence is checked against the state the RFC prescribes.
"""
from __future__ import annotations

import asyncio

from conftest import (IM, QUIET, Clients, bare, login, make_mutual, next_matching, none_matching, raw_iq,
                      roster_item_xml, run, wait_presence, wait_push)

def roster_items(iq) -> dict[str, dict]:
    """Items of a roster result: jid -> attributes as sent (plus groups)."""
    out = {}
    for item in iq.xml.iter("{jabber:iq:roster}item"):
        attrs = dict(item.attrib)
        attrs["groups"] = sorted(g.text or "" for g in item.iter("{jabber:iq:roster}group"))
        out[attrs["jid"]] = attrs
    return out


async def fetch_roster(c) -> dict[str, dict]:
    return roster_items(await raw_iq(c, "get", "<query xmlns='jabber:iq:roster'/>"))


def state(item: dict) -> tuple:
    """(subscription, ask, approved) as sent; absent attributes as None."""
    return item.get("subscription"), item.get("ask"), item.get("approved")


def test_roster_set_get_remove_with_pushes(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("alice", "r2"), **IM) as (a1, a2):
            assert a1.roster_result is not None
            assert roster_items(a1.roster_result) == {}
            await raw_iq(a1, "set", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                                    "name='Bobby'><group>Friends</group><group>Work</group></item></query>")
            # §2.1.5: the push goes to every interested resource, the one that set it too.
            for c in (a1, a2):
                push = await wait_push(c, bare("bob"))
                assert push["subscription"] == "none", push
                assert push["name"] == "Bobby", push
                assert sorted(push["groups"]) == ["Friends", "Work"], push
                assert "ask" not in push, push
            got = await fetch_roster(a2)
            assert got[bare("bob")]["name"] == "Bobby"
            assert got[bare("bob")]["groups"] == ["Friends", "Work"]
            assert state(got[bare("bob")]) == ("none", None, None)

            await raw_iq(a1, "set", "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' "
                                    "subscription='remove'/></query>")
            for c in (a1, a2):
                push = await wait_push(c, bare("bob"))
                assert push["subscription"] == "remove", push
            assert bare("bob") not in await fetch_roster(a1)

    run(body())


def test_roster_push_not_sent_to_resource_that_never_asked(hearth):
    """RFC 6121 §2.1.6: pushes go to interested resources only."""
    async def body():
        async with Clients(hearth, ("alice", "r1"), **IM) as (a1,):
            async with Clients(hearth, ("alice", "quiet"), auto_subscriptions=False) as (quiet,):
                await raw_iq(a1, "set", "<query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query>")
                await wait_push(a1, bare("carol"))
                await none_matching(quiet.roster_iqs, lambda iq: iq["type"] == "set", "roster push", QUIET)

    run(body())


def test_subscribe_subscribed_then_mutual_both(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            A, B = bare("alice"), bare("bob")
            # §3.1.2: alice asks; her roster shows none + ask=subscribe.
            alice.send_presence(pto=B, ptype="subscribe")
            push = await wait_push(alice, B)
            assert state(push) == ("none", "subscribe", None), push
            # §3.1.3: bob receives the request from alice's bare JID.
            p = await next_matching(bob.presences, lambda p: p["type"] == "subscribe", "subscribe at bob")
            assert str(p["from"]) == A, p
            # §3.1.5: bob approves: his roster gets alice with 'from'.
            bob.send_presence(pto=A, ptype="subscribed")
            push = await wait_push(bob, A)
            assert state(push) == ("from", None, None), push
            # §3.1.6: alice gets 'to' without ask, the subscribed presence, then bob's presence.
            push = await wait_push(alice, B)
            assert state(push) == ("to", None, None), push
            p = await next_matching(alice.presences, lambda p: p["type"] == "subscribed", "subscribed at alice")
            assert str(p["from"]) == B, p
            p = await wait_presence(alice, f"{B}/r1", "available")
            assert str(p["to"]).startswith(A), p

            # The other direction: both.
            bob.send_presence(pto=A, ptype="subscribe")
            push = await wait_push(bob, A)
            assert state(push) == ("from", "subscribe", None), push
            p = await next_matching(alice.presences, lambda p: p["type"] == "subscribe", "subscribe at alice")
            assert str(p["from"]) == B, p
            alice.send_presence(pto=B, ptype="subscribed")
            push = await wait_push(alice, B)
            assert state(push) == ("both", None, None), push
            push = await wait_push(bob, A)
            assert state(push) == ("both", None, None), push
            await wait_presence(bob, f"{A}/r1", "available")

            assert state((await fetch_roster(alice))[B]) == ("both", None, None)
            assert state((await fetch_roster(bob))[A]) == ("both", None, None)

    run(body())


def test_three_users_add_each_other(hearth):
    async def body():
        async with Clients(hearth, "alice", "bob", "carol", **IM) as clients:
            for i, x in enumerate(clients):
                for y in clients[i + 1:]:
                    await make_mutual(x, y)
            for c in clients:
                roster = await fetch_roster(c)
                others = {o.boundjid.bare for o in clients if o is not c}
                assert set(roster) == others, roster
                for jid in others:
                    assert state(roster[jid]) == ("both", None, None), (c.boundjid, roster)
            # Each one's broadcast reaches both others.
            for c in clients:
                c.send_presence(pstatus=f"status of {c.boundjid.user}")
            for c in clients:
                for o in clients:
                    if o is c:
                        continue
                    await next_matching(
                        c.presences,
                        lambda p, o=o: str(p["from"]) == o.boundjid.full and p["status"] == f"status of {o.boundjid.user}",
                        f"{o.boundjid.user}'s status at {c.boundjid.user}")

    run(body())


def test_unsubscribe_drops_to_and_contact_goes_unavailable(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            A, B = bare("alice"), bare("bob")
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            # §3.3: alice unsubscribes from bob: both -> from on her side, both -> to on his.
            alice.send_presence(pto=B, ptype="unsubscribe")
            push = await wait_push(alice, B)
            assert state(push) == ("from", None, None), push
            push = await wait_push(bob, A)
            assert state(push) == ("to", None, None), push
            p = await next_matching(bob.presences, lambda p: p["type"] == "unsubscribe", "unsubscribe at bob")
            assert str(p["from"]) == A
            # §3.3.3: alice is told bob is unavailable to her now.
            await wait_presence(alice, f"{B}/r1", "unavailable")
            # And bob's later broadcasts no longer reach her; hers still reach him.
            bob.send_presence(pstatus="bob after unsubscribe")
            alice.send_presence(pstatus="alice after unsubscribe")
            await next_matching(bob.presences, lambda p: p["status"] == "alice after unsubscribe",
                                "alice's status at bob")
            await none_matching(alice.presences, lambda p: p["status"] == "bob after unsubscribe",
                                "bob's presence at alice", QUIET)

    run(body())


def test_unsubscribed_cancels_from_and_contact_goes_unavailable(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            A, B = bare("alice"), bare("bob")
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            # §3.2: bob cancels alice's subscription to him.
            bob.send_presence(pto=A, ptype="unsubscribed")
            push = await wait_push(bob, A)
            assert state(push) == ("to", None, None), push
            push = await wait_push(alice, B)
            assert state(push) == ("from", None, None), push
            p = await next_matching(alice.presences, lambda p: p["type"] == "unsubscribed", "unsubscribed at alice")
            assert str(p["from"]) == B
            # §3.2.2: and alice is told every resource of bob's is unavailable.
            await wait_presence(alice, f"{B}/r1", "unavailable")
            bob.send_presence(pstatus="bob after cancel")
            await none_matching(alice.presences, lambda p: p["status"] == "bob after cancel",
                                "bob's presence at alice", QUIET)

    run(body())


def test_unsubscribed_denies_pending_request(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            A, B = bare("alice"), bare("bob")
            alice.send_presence(pto=B, ptype="subscribe")
            assert state(await wait_push(alice, B)) == ("none", "subscribe", None)
            await next_matching(bob.presences, lambda p: p["type"] == "subscribe", "subscribe at bob")
            bob.send_presence(pto=A, ptype="unsubscribed")
            # §3.2.3 / §3.1.6: the request is gone: none, no ask.
            push = await wait_push(alice, B)
            assert state(push) == ("none", None, None), push
            p = await next_matching(alice.presences, lambda p: p["type"] == "unsubscribed", "unsubscribed at alice")
            assert str(p["from"]) == B
            # No subscription came out of it: bob's broadcast does not reach alice.
            bob.send_presence(pstatus="bob after denial")
            await none_matching(alice.presences, lambda p: p["status"] == "bob after denial",
                                "bob's presence at alice", QUIET)

    run(body())


def test_preapproval_then_subscribe_is_auto_approved(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            A, B = bare("alice"), bare("bob")
            # §3.4: bob pre-approves alice before she asks: approved='true', nothing sent to her.
            bob.send_presence(pto=A, ptype="subscribed")
            push = await wait_push(bob, A)
            assert state(push) == ("none", None, "true"), push
            await none_matching(alice.presences, lambda p: p["type"] == "subscribed", "subscribed at alice", QUIET)
            # Her request is approved by the server: bob is not asked.
            alice.send_presence(pto=B, ptype="subscribe")
            p = await next_matching(alice.presences, lambda p: p["type"] == "subscribed", "subscribed at alice")
            assert str(p["from"]) == B
            await wait_presence(alice, f"{B}/r1", "available")
            await next_matching(alice.roster_iqs,
                                lambda iq: iq["type"] == "set" and (i := roster_item_xml(iq, B)) is not None
                                and i.get("subscription") == "to" and i.get("ask") is None,
                                "push of bob with 'to' at alice")
            push = await wait_push(bob, A)
            assert state(push) == ("from", None, None), push
            await none_matching(bob.presences, lambda p: p["type"] == "subscribe", "subscribe at bob", QUIET)

    run(body())


def test_pending_request_delivered_again_at_next_login(hearth):
    async def body():
        A, B = bare("alice"), bare("bob")
        alice = await login(hearth, "alice", resource="r1", **IM)
        try:
            # bob is offline: the request waits for him (§3.1.3).
            alice.send_presence(pto=B, ptype="subscribe")
            assert state(await wait_push(alice, B)) == ("none", "subscribe", None)
            for round_ in range(2):
                # He logs in, sees it, leaves without answering; it comes again next time.
                bob = await login(hearth, "bob", resource=f"r{round_}", **IM)
                try:
                    p = await next_matching(bob.presences, lambda p: p["type"] == "subscribe",
                                            f"subscribe at bob (login {round_ + 1})")
                    assert str(p["from"]) == A, p
                finally:
                    await bob.close()
            # Answered at last, it is not delivered a third time.
            bob = await login(hearth, "bob", resource="r9", **IM)
            try:
                await next_matching(bob.presences, lambda p: p["type"] == "subscribe", "subscribe at bob (login 3)")
                bob.send_presence(pto=A, ptype="subscribed")
                assert state(await wait_push(bob, A)) == ("from", None, None)
            finally:
                await bob.close()
            bob = await login(hearth, "bob", resource="r10", **IM)
            try:
                await none_matching(bob.presences, lambda p: p["type"] == "subscribe", "subscribe at bob (login 4)", QUIET)
            finally:
                await bob.close()
        finally:
            await alice.close()

    run(body())


def test_roster_versioning_returns_only_delta(hearth):
    async def body():
        # Session 1: full roster with a version, three items added.
        async with Clients(hearth, ("alice", "r1"), **IM) as (a,):
            assert "rosterver" in a.features, sorted(a.features)
            ver0 = a.roster_result["roster"]["ver"]
            assert ver0 is not None and ver0 != "", f"full roster result has no ver: {a.roster_result}"
            for jid in ("bob@localhost", "carol@localhost", "dave@localhost"):
                await raw_iq(a, "set", f"<query xmlns='jabber:iq:roster'><item jid='{jid}'/></query>")
                push = await wait_push(a, jid)
                assert push["ver"], f"push without ver: {push}"
            ver1 = push["ver"]
            assert ver1 != ver0

        # Another resource changes two items and adds one while r1 is away.
        async with Clients(hearth, ("alice", "other"), **IM) as (o,):
            await raw_iq(o, "set", "<query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='Caz'/></query>")
            await raw_iq(o, "set", "<query xmlns='jabber:iq:roster'><item jid='dave@localhost' subscription='remove'/></query>")
            await raw_iq(o, "set", "<query xmlns='jabber:iq:roster'><item jid='erin@localhost'/></query>")
            last = await wait_push(o, "erin@localhost")
            ver2 = last["ver"]

        # Session 2 with ver1: an empty result, then pushes of exactly what changed (§2.6.3).
        async with Clients(hearth, ("alice", "r1"), initial_presence=False, auto_subscriptions=False) as (a,):
            res = await raw_iq(a, "get", f"<query xmlns='jabber:iq:roster' ver='{ver1}'/>")
            assert len(res.xml) == 0, f"expected an empty IQ-result, got {res}"
            pushed: dict[str, dict] = {}
            vers = []
            while len(pushed) < 3:
                iq = await next_matching(a.roster_iqs, lambda iq: iq["type"] == "set", "delta push")
                for item in iq.xml.iter("{jabber:iq:roster}item"):
                    pushed[item.get("jid")] = dict(item.attrib)
                vers.append(iq["roster"]["ver"])
            assert set(pushed) == {"carol@localhost", "dave@localhost", "erin@localhost"}, pushed
            assert pushed["carol@localhost"].get("name") == "Caz"
            assert pushed["dave@localhost"].get("subscription") == "remove"
            assert pushed["erin@localhost"].get("subscription") == "none"
            assert vers[-1] == ver2, (vers, ver2)
            await none_matching(a.roster_iqs, lambda iq: iq["type"] == "set", "push of an unchanged item", QUIET)

            # With the current version: empty result and no pushes at all.
            res = await raw_iq(a, "get", f"<query xmlns='jabber:iq:roster' ver='{ver2}'/>")
            assert len(res.xml) == 0, f"expected an empty IQ-result, got {res}"
            await none_matching(a.roster_iqs, lambda iq: iq["type"] == "set", "push with nothing changed", QUIET)

            # An empty ver asks for the full roster, with its version (§2.6.2).
            res = await raw_iq(a, "get", "<query xmlns='jabber:iq:roster' ver=''/>")
            assert res["roster"]["ver"] == ver2
            assert set(roster_items(res)) == {"bob@localhost", "carol@localhost", "erin@localhost"}

    run(body())
