"""The IM extensions seen by slixmpp plugins: service discovery of each feature (XEP-0030),
ping (XEP-0199), software version (XEP-0092), entity time (XEP-0202), last activity
(XEP-0012), vcard-temp (XEP-0054), private XML storage (XEP-0049), message carbons
(XEP-0280) and blocking (XEP-0191)."""
from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, IM, QUIET, Clients, bare, drain, login, make_mutual, next_matching, none_matching, send_with_id,
                      raw_iq, run, wait_message, wait_presence)

SERVER_FEATURES = [
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:ping",
    "jabber:iq:version",
    "urn:xmpp:time",
    "jabber:iq:last",
    "vcard-temp",
    "jabber:iq:private",
    "urn:xmpp:carbons:2",
    "urn:xmpp:blocking",
    "msgoffline",
]


async def iq_error(coro) -> tuple[str, str]:
    """Awaits an IQ expected to fail; returns (condition, error type)."""
    with pytest.raises(IqError) as e:
        await coro
    err = e.value.iq["error"]
    return err["condition"], err["type"]


# ------------------------------------------------------------------------------ disco


def test_server_disco_info_lists_each_feature(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0030",)) as (a,):
            res = await a.plugin["xep_0030"].get_info(jid=DOMAIN, local=False, timeout=10)
            info = res["disco_info"]
            features = set(info["features"])
            missing = [f for f in SERVER_FEATURES if f not in features]
            assert not missing, f"missing from server disco#info: {missing}; listed: {sorted(features)}"
            identities = {(cat, typ) for cat, typ, _lang, _name in info["identities"]}
            assert ("server", "im") in identities, identities

    run(body())


# ------------------------------------------------------------------------------ ping, version, time, last


def test_ping_server(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0199",)) as (a,):
            rtt = await a.plugin["xep_0199"].ping(jid=DOMAIN, timeout=10)
            assert rtt is not None and 0 <= rtt < 10

    run(body())


def test_ping_own_account_answered_by_server(hearth):
    """RFC 6120 §10.5.4 / XEP-0199 §4.3: an IQ to the user's bare JID is the server's to answer."""
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0199",)) as (a,):
            res = await raw_iq(a, "get", "<ping xmlns='urn:xmpp:ping'/>", to=bare("alice"))
            assert res["type"] == "result"

    run(body())


def test_software_version(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0092",)) as (a,):
            res = await a.plugin["xep_0092"].get_version(DOMAIN, timeout=10)
            v = res["software_version"]
            assert v["name"], res
            assert v["version"], res

    run(body())


def test_entity_time(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0202",)) as (a,):
            res = await a.plugin["xep_0202"].get_entity_time(DOMAIN, timeout=10)
            q = res.xml.find("{urn:xmpp:time}time")
            assert q is not None, res
            utc = q.findtext("{urn:xmpp:time}utc")
            tzo = q.findtext("{urn:xmpp:time}tzo")
            assert utc and utc.endswith("Z"), f"utc must be UTC with 'Z' (XEP-0082): {utc!r}"
            assert tzo and (tzo == "Z" or (len(tzo) == 6 and tzo[0] in "+-" and tzo[3] == ":")), \
                f"tzo must be Z or ±hh:mm: {tzo!r}"
            when = dt.datetime.fromisoformat(utc.replace("Z", "+00:00"))
            skew = abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds())
            assert skew < 5, f"server time {utc} is {skew}s off"

    run(body())


def test_last_activity_of_server_is_uptime(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0012",)) as (a,):
            res = await a.plugin["xep_0012"].get_last_activity(DOMAIN, timeout=10)
            q = res.xml.find("{jabber:iq:last}query")
            assert q is not None, res
            seconds = int(q.get("seconds"))
            assert 0 <= seconds < 300, f"uptime {seconds}s for a server started seconds ago"

    run(body())


def test_last_activity_of_contact_and_stranger(hearth):
    """XEP-0012 §4: an offline contact's last logout and status; a stranger gets forbidden;
    an online contact gets seconds='0' from the server (§5)."""
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("bob", "r1"), **IM) as (alice, bob):
            await make_mutual(alice, bob)
        async with Clients(hearth, ("alice", "r1"), ("carol", "r1"), **IM, plugins=("xep_0012",)) as (alice, carol):
            bob = await login(hearth, "bob", resource="r1", **IM)
            res = await raw_iq(alice, "get", "<query xmlns='jabber:iq:last'/>", to=bare("bob"))
            assert int(res.xml.find("{jabber:iq:last}query").get("seconds")) == 0, res
            bob.send_presence(ptype="unavailable", pstatus="gone fishing")
            await bob.close()
            await wait_presence(alice, f"{bare('bob')}/r1", "unavailable")
            await asyncio.sleep(1.2)
            res = await raw_iq(alice, "get", "<query xmlns='jabber:iq:last'/>", to=bare("bob"))
            q = res.xml.find("{jabber:iq:last}query")
            assert q is not None, res
            assert 1 <= int(q.get("seconds")) < 30, res
            assert (q.text or "") == "gone fishing", res
            cond, _ = await iq_error(raw_iq(carol, "get", "<query xmlns='jabber:iq:last'/>", to=bare("bob")))
            assert cond == "forbidden"

    run(body())


# ------------------------------------------------------------------------------ vcard-temp


def test_vcard_set_then_get_by_self_and_contact(hearth):
    async def body():
        async with Clients(hearth, "alice", "bob", plugins=("xep_0054",)) as (alice, bob):
            v = alice.plugin["xep_0054"].make_vcard()
            v["FN"] = "Alice Liddell"
            v["NICKNAME"] = "ali"
            await alice.plugin["xep_0054"].publish_vcard(v, timeout=10)
            # Own vCard: IQ-get without 'to'.
            res = await raw_iq(alice, "get", "<vCard xmlns='vcard-temp'/>")
            assert res["vcard_temp"]["FN"] == "Alice Liddell", res
            # Someone else's: to her bare JID, answered by the server (XEP-0054 §3.2).
            res = await bob.plugin["xep_0054"].get_vcard(bare("alice"), local=False, cached=False, timeout=10)
            assert res["from"].bare == bare("alice"), res
            assert res["vcard_temp"]["FN"] == "Alice Liddell", res
            # slixmpp gives NICKNAME as a list.
            assert res["vcard_temp"]["NICKNAME"] in ("ali", ["ali"]), res
            # Replaced, not merged.
            v2 = alice.plugin["xep_0054"].make_vcard()
            v2["FN"] = "A. Liddell"
            await alice.plugin["xep_0054"].publish_vcard(v2, timeout=10)
            res = await raw_iq(bob, "get", "<vCard xmlns='vcard-temp'/>", to=bare("alice"))
            assert res["vcard_temp"]["FN"] == "A. Liddell"
            assert res.xml.find("{vcard-temp}vCard/{vcard-temp}NICKNAME") is None, res

    run(body())


def test_vcard_absent_and_unknown_user_and_foreign_set(hearth):
    async def body():
        async with Clients(hearth, "alice", "bob", plugins=("xep_0054",)) as (alice, bob):
            # §3.1: none yet: item-not-found or an empty vCard.
            try:
                res = await raw_iq(alice, "get", "<vCard xmlns='vcard-temp'/>")
                v = res.xml.find("{vcard-temp}vCard")
                assert v is not None and len(v) == 0, res
            except IqError as e:
                assert e.iq["error"]["condition"] == "item-not-found", e.iq
            # §3.2: another user's missing vCard and an unknown user look the same.
            c1, _ = await iq_error(raw_iq(bob, "get", "<vCard xmlns='vcard-temp'/>", to=bare("alice")))
            c2, _ = await iq_error(raw_iq(bob, "get", "<vCard xmlns='vcard-temp'/>", to=bare("nobody")))
            assert c1 == c2 == "service-unavailable", (c1, c2)
            # §3.3: setting someone else's: forbidden or not-allowed.
            cond, _ = await iq_error(raw_iq(bob, "set", "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>",
                                            to=bare("alice")))
            assert cond in ("forbidden", "not-allowed"), cond

    run(body())


def test_vcard_survives_restart(hearth):
    async def body():
        async with Clients(hearth, "alice") as (alice,):
            await raw_iq(alice, "set", "<vCard xmlns='vcard-temp'><FN>Persistent Alice</FN></vCard>")

    run(body())
    hearth.restart()

    async def after():
        async with Clients(hearth, "bob") as (bob,):
            res = await raw_iq(bob, "get", "<vCard xmlns='vcard-temp'/>", to=bare("alice"))
            assert res.xml.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Persistent Alice", res

    run(after())


# ------------------------------------------------------------------------------ private storage


def test_private_storage_roundtrip(hearth):
    async def body():
        async with Clients(hearth, "alice", "bob") as (alice, bob):
            await raw_iq(alice, "set", "<query xmlns='jabber:iq:private'>"
                                       "<prefs xmlns='test:prefs'><colour>green</colour></prefs></query>")
            res = await raw_iq(alice, "get", "<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'/></query>")
            assert res.xml.findtext("{jabber:iq:private}query/{test:prefs}prefs/{test:prefs}colour") == "green", res
            # Another namespace is independent: asked for, it comes back empty.
            res = await raw_iq(alice, "get", "<query xmlns='jabber:iq:private'><other xmlns='test:other'/></query>")
            other = res.xml.find("{jabber:iq:private}query/{test:other}other")
            assert other is not None and len(other) == 0 and not (other.text or "").strip(), res
            # Overwritten per namespace.
            await raw_iq(alice, "set", "<query xmlns='jabber:iq:private'>"
                                       "<prefs xmlns='test:prefs'><colour>blue</colour></prefs></query>")
            res = await raw_iq(alice, "get", "<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'/></query>")
            assert res.xml.findtext("{jabber:iq:private}query/{test:prefs}prefs/{test:prefs}colour") == "blue", res
            # Bob sees none of it (§3: forbidden, or service-unavailable in common use).
            cond, _ = await iq_error(raw_iq(bob, "get", "<query xmlns='jabber:iq:private'><prefs xmlns='test:prefs'/></query>",
                                            to=bare("alice")))
            assert cond in ("forbidden", "service-unavailable"), cond
            # §2: no child: not-acceptable.
            cond, _ = await iq_error(raw_iq(alice, "get", "<query xmlns='jabber:iq:private'/>"))
            assert cond == "not-acceptable", cond

    run(body())


def test_private_storage_with_slixmpp_plugin_and_restart(hearth):
    """Bookmarks (storage:bookmarks, XEP-0048) stored through slixmpp's xep_0049/xep_0048 and
    read back after a restart."""
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0049", "xep_0048")) as (alice,):
            from slixmpp.plugins.xep_0048 import Bookmarks

            b = Bookmarks()
            b.add_conference("room@conference.localhost", "alice", name="The Room", autojoin=True)
            await alice.plugin["xep_0049"].store(b, timeout=10)

    run(body())
    hearth.restart()

    async def after():
        async with Clients(hearth, "alice", plugins=("xep_0049", "xep_0048")) as (alice,):
            res = await alice.plugin["xep_0049"].retrieve("bookmarks", timeout=10)
            confs = res["private"]["bookmarks"]["conferences"]
            assert [str(c["jid"]) for c in confs] == ["room@conference.localhost"], res
            assert confs[0]["name"] == "The Room"

    run(after())


# ------------------------------------------------------------------------------ carbons


def carbon_queues(c):
    rec: asyncio.Queue = asyncio.Queue()
    sent: asyncio.Queue = asyncio.Queue()
    c.add_event_handler("carbon_received", rec.put_nowait)
    c.add_event_handler("carbon_sent", sent.put_nowait)
    return rec, sent


def forwarded(outer, kind: str):
    """The message inside <received/> or <sent/> (XEP-0280 §6, §7), as raw XML."""
    inner = outer.xml.find(f"{{urn:xmpp:carbons:2}}{kind}/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
    assert inner is not None, f"no {kind}/forwarded/message in {outer}"
    return inner


def test_carbons_received_and_sent_copies(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("alice", "r2"), ("alice", "plain"), ("bob", "b"),
                           plugins=("xep_0280",)) as (r1, r2, plain, bob):
            rec1, sent1 = carbon_queues(r1)
            rec2, sent2 = carbon_queues(r2)
            recp, sentp = carbon_queues(plain)
            await r1.plugin["xep_0280"].enable(timeout=10)
            await r2.plugin["xep_0280"].enable(timeout=10)

            # Received: bob -> alice/r1; r2 gets a copy from alice's bare JID.
            bob.send_message(mto=r1.boundjid.full, mbody="to r1", mtype="chat")
            await wait_message(r1, "to r1")
            outer = await next_matching(rec2, lambda m: True, "received carbon at r2")
            assert str(outer["from"]) == bare("alice"), outer
            assert str(outer["to"]) == r2.boundjid.full, outer
            inner = forwarded(outer, "received")
            assert inner.get("from") == bob.boundjid.full and inner.get("to") == r1.boundjid.full, outer
            assert inner.findtext("{jabber:client}body") == "to r1"
            # §6: the addressed resource gets no copy; a resource without carbons gets none.
            await none_matching(rec1, lambda m: True, "received carbon at r1 (the addressee)", 0.5)
            await none_matching(recp, lambda m: True, "received carbon at a resource without carbons", 0.5)
            await none_matching(plain.messages, lambda m: m["body"] == "to r1", "the message at another resource", 0.1)

            # Sent: alice/r1 -> bob; r2 gets a sent copy.
            r1.send_message(mto=bob.boundjid.bare, mbody="from r1", mtype="chat")
            await wait_message(bob, "from r1")
            outer = await next_matching(sent2, lambda m: True, "sent carbon at r2")
            assert str(outer["from"]) == bare("alice"), outer
            inner = forwarded(outer, "sent")
            assert inner.get("from") == r1.boundjid.full, outer
            assert inner.findtext("{jabber:client}body") == "from r1"
            await none_matching(sent1, lambda m: True, "sent carbon at the sender itself", 0.5)
            await none_matching(sentp, lambda m: True, "sent carbon at a resource without carbons", 0.5)

            # §8: <private/> with a no-copy hint is not copied.
            msg = bob.make_message(mto=r1.boundjid.full, mbody="private to r1", mtype="chat")
            from slixmpp.xmlstream import ET
            msg.xml.append(ET.Element("{urn:xmpp:carbons:2}private"))
            msg.xml.append(ET.Element("{urn:xmpp:hints}no-copy"))
            msg.send()
            await wait_message(r1, "private to r1")
            await none_matching(rec2, lambda m: True, "carbon of a private message", QUIET)

            # Disabled: no more copies (§5).
            await r2.plugin["xep_0280"].disable(timeout=10)
            bob.send_message(mto=r1.boundjid.full, mbody="after disable", mtype="chat")
            await wait_message(r1, "after disable")
            await none_matching(rec2, lambda m: True, "carbon after disable", QUIET)

    run(body())


def test_carbons_for_message_to_bare_jid(hearth):
    """A chat message to the bare JID: RFC 6121 §8.5.2.1.1 lets the server deliver it to the
    highest-priority resource or to all non-negative ones; XEP-0280 §6 then says each other
    enabled resource gets a received carbon instead. So r1 (priority 5) gets the original, and
    r2 (priority 1) gets exactly one of: the original, or a carbon of it."""
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("alice", "r2"), ("bob", "b"),
                           plugins=("xep_0280",)) as (r1, r2, bob):
            rec1, _ = carbon_queues(r1)
            rec2, _ = carbon_queues(r2)
            await r1.plugin["xep_0280"].enable(timeout=10)
            await r2.plugin["xep_0280"].enable(timeout=10)
            r1.send_presence(ppriority=5)
            r2.send_presence(ppriority=1)
            await asyncio.sleep(0.3)
            bob.send_message(mto=bare("alice"), mbody="to bare", mtype="chat")
            await wait_message(r1, "to bare")
            await none_matching(rec1, lambda m: True, "carbon at r1, which got the original", 0.3)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            originals, carbons = [], []
            while loop.time() < deadline and not (originals or carbons):
                while not r2.messages.empty():
                    m = r2.messages.get_nowait()
                    if m["body"] == "to bare":
                        originals.append(m)
                while not rec2.empty():
                    c = rec2.get_nowait()
                    if forwarded(c, "received").findtext("{jabber:client}body") == "to bare":
                        carbons.append(c)
                await asyncio.sleep(0.05)
            await asyncio.sleep(QUIET)
            originals += [m for m in drain(r2.messages) if m["body"] == "to bare"]
            carbons += drain(rec2)
            assert len(originals) + len(carbons) == 1, \
                f"r2 must get the message or its carbon, once: originals={originals} carbons={carbons}"

    run(body())


# ------------------------------------------------------------------------------ blocking


def test_blocking_messages_presence_and_blocklist(hearth):
    async def body():
        async with Clients(hearth, ("alice", "r1"), ("alice", "r2"), ("carol", "c"),
                           plugins=("xep_0191",), **IM) as (a1, a2, carol):
            await make_mutual(a1, carol)
            await asyncio.sleep(0.3)
            assert await a1.plugin["xep_0191"].get_blocked_jids(timeout=10) == set()
            await a2.plugin["xep_0191"].get_blocked_jids(timeout=10)  # r2 asks too: gets pushes
            pushes: asyncio.Queue = asyncio.Queue()
            a2.add_event_handler("blocked", pushes.put_nowait)

            await a1.plugin["xep_0191"].block(bare("carol"), timeout=10)
            # §3.3: the other resource that asked for the list gets the push.
            push = await next_matching(pushes, lambda iq: True, "block push at r2")
            assert {i.get("jid") for i in push.xml.iter("{urn:xmpp:blocking}item")} == {bare("carol")}, push
            # §3.3: carol, subscribed to alice, sees alice unavailable.
            await wait_presence(carol, a1.boundjid.full, "unavailable")
            await wait_presence(carol, a2.boundjid.full, "unavailable")
            assert await a2.plugin["xep_0191"].get_blocked_jids(timeout=10) == {bare("carol")}

            # Carol's message is not delivered; she gets service-unavailable (SHOULD).
            send_with_id(carol, bare("alice"), "carol while blocked", "blk1")
            err = await next_matching(carol.message_errors, lambda m: m["type"] == "error", "error at carol")
            assert err["id"] == "blk1" and err["error"]["condition"] == "service-unavailable", err
            # Her presence does not reach alice, and she gets no error for it.
            carol.send_presence(pstatus="carol while blocked")
            await none_matching(a1.messages, lambda m: m["body"] == "carol while blocked", "blocked message", 0.3)
            await none_matching(a1.presences, lambda p: p["from"].bare == bare("carol"), "presence from carol", QUIET)
            await none_matching(carol.presences, lambda p: p["type"] == "error", "error for presence", 0.1)
            # An IQ from carol to alice's resource: service-unavailable (MUST).
            c, _ = await iq_error(raw_iq(carol, "get", "<ping xmlns='urn:xmpp:ping'/>", to=a1.boundjid.full))
            assert c == "service-unavailable", c
            # Alice's broadcast no longer reaches carol.
            a1.send_presence(pstatus="alice while carol blocked")
            await none_matching(carol.presences, lambda p: p["status"] == "alice while carol blocked",
                                "alice's presence at carol", QUIET)
            # §3.4: alice writing to carol: not-acceptable with <blocked xmlns='urn:xmpp:blocking:errors'/>.
            send_with_id(a1, bare("carol"), "alice to blocked", "blk2")
            err = await next_matching(a1.message_errors, lambda m: m["type"] == "error", "error at alice")
            assert err["id"] == "blk2" and err["error"]["condition"] == "not-acceptable", err
            assert err.xml.find("{jabber:client}error/{urn:xmpp:blocking:errors}blocked") is not None, err
            await none_matching(carol.messages, lambda m: m["body"] == "alice to blocked", "message to blocked", 0.3)

            # §3.5: unblock: carol gets alice's current presence, messages flow again.
            await a1.plugin["xep_0191"].unblock(bare("carol"), timeout=10)
            await next_matching(carol.presences, lambda p: str(p["from"]) == a1.boundjid.full and p["type"] == "available",
                                "alice's presence at carol after unblock")
            carol.send_message(mto=bare("alice"), mbody="carol after unblock", mtype="chat")
            await wait_message(a1, "carol after unblock")

    run(body())


def test_block_persists_across_sessions(hearth):
    async def body():
        async with Clients(hearth, "alice", plugins=("xep_0191",)) as (a,):
            await a.plugin["xep_0191"].block(bare("carol"), timeout=10)

    run(body())
    hearth.restart()

    async def after():
        async with Clients(hearth, "alice", "carol", plugins=("xep_0191",)) as (a, carol):
            assert await a.plugin["xep_0191"].get_blocked_jids(timeout=10) == {bare("carol")}
            carol.send_message(mto=bare("alice"), mbody="after restart", mtype="chat")
            await none_matching(a.messages, lambda m: m["body"] == "after restart", "blocked message", QUIET)

    run(after())
