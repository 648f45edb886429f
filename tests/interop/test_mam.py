"""Message archive (XEP-0313) seen by slixmpp's xep_0313 plugin: a 1,000-message conversation
paged through with RSM forwards and backwards, the `with` filter, stanza-ids (XEP-0359) on
delivered copies, and a second device that gets the whole conversation from the archive and
then, while online, carbons (XEP-0280)."""
from __future__ import annotations

import asyncio

from conftest import DOMAIN, Clients, bare, next_matching, raw_iq, run, wait_message

MAM = ("xep_0313", "xep_0280")
NS_SID = "{urn:xmpp:sid:0}stanza-id"
N = 1000


async def settle(c) -> None:
    """A ping round trip: the single-threaded server has handled everything c sent before it."""
    await raw_iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)


def archived(result) -> tuple[str, str, str, str]:
    """(archive id, from, to, body) of one MAM result message."""
    inner = result["mam_result"]["forwarded"]["stanza"]
    return result["mam_result"]["id"], str(inner["from"]), str(inner["to"]), inner["body"]


async def collect(client, *, reverse: bool = False, with_jid: str | None = None, page: int = 100) -> list:
    out = []
    async for m in client.plugin["xep_0313"].iterate(with_jid=with_jid, reverse=reverse, rsm={"max": page}):
        out.append(archived(m))
        assert len(out) <= 10 * N, "pager does not stop"
    return out


async def wait_bodies(client, bodies: list[str], timeout: float = 60) -> None:
    """Waits until every body in `bodies` has arrived at `client`, in order."""
    want = list(bodies)

    async def loop():
        while want:
            m = await client.messages.get()
            if m["body"] == want[0]:
                want.pop(0)

    await asyncio.wait_for(loop(), timeout)


def test_mam_pages_1000_messages_both_ways_with_rsm(hearth):
    async def body():
        async with Clients(hearth, ("alice", "a1"), ("bob", "b1"), plugins=MAM) as (alice, bob):
            sent = [f"msg {i:04}" for i in range(N)]
            # Both directions, in blocks of 50 (even blocks from alice, odd ones from bob); a
            # ping round trip after each block fixes the order the server sees them in.
            by_alice = [t for i, t in enumerate(sent) if (i // 50) % 2 == 0]
            by_bob = [t for i, t in enumerate(sent) if (i // 50) % 2 == 1]
            for i, text in enumerate(sent):
                sender, to = (alice, "bob") if (i // 50) % 2 == 0 else (bob, "alice")
                sender.send_message(mto=bare(to), mbody=text, mtype="chat")
                if i % 50 == 49:
                    await settle(sender)
            await wait_bodies(bob, by_alice)
            await wait_bodies(alice, by_bob)

            forward = await collect(alice)
            assert [b for (_, _, _, b) in forward] == sent
            ids = [i for (i, _, _, _) in forward]
            assert len(set(ids)) == N
            # Directions are kept: even blocks alice sent, odd ones she received.
            for i, (_, frm, to, _) in enumerate(forward):
                if (i // 50) % 2 == 0:
                    assert frm == f"{bare('alice')}/a1" and to == bare("bob"), (i, frm, to)
                else:
                    assert frm == f"{bare('bob')}/b1" and to == bare("alice"), (i, frm, to)

            backward = await collect(alice, reverse=True, page=77)
            assert [b for (_, _, _, b) in backward] == sent[::-1]
            assert [i for (i, _, _, _) in backward] == ids[::-1]

            # bob's archive holds the same conversation under his own ids.
            bob_all = await collect(bob, page=250)
            assert [b for (_, _, _, b) in bob_all] == sent
            assert not set(ids) & {i for (i, _, _, _) in bob_all}

    run(body(), timeout=240)


def test_mam_with_filter_and_stanza_id_on_delivery(hearth):
    async def body():
        async with Clients(hearth, ("alice", "a1"), ("bob", "b1"), ("carol", "c1"), plugins=MAM) as (alice, bob, carol):
            bob.send_message(mto=bare("alice"), mbody="from bob 1", mtype="chat")
            m = await wait_message(alice, "from bob 1")
            sid = m.xml.find(NS_SID)
            assert sid is not None and sid.get("by") == bare("alice"), m
            carol.send_message(mto=bare("alice"), mbody="from carol", mtype="chat")
            await wait_message(alice, "from carol")
            alice.send_message(mto=bare("bob"), mbody="to bob", mtype="chat")
            await wait_message(bob, "to bob")
            bob.send_message(mto=bare("alice"), mbody="from bob 2", mtype="chat")
            await wait_message(alice, "from bob 2")

            with_bob = await collect(alice, with_jid=bare("bob"))
            assert [b for (_, _, _, b) in with_bob] == ["from bob 1", "to bob", "from bob 2"]
            # The id on the delivered copy is the archive id.
            assert with_bob[0][0] == sid.get("id")
            with_carol = await collect(alice, with_jid=bare("carol"), reverse=True)
            assert [b for (_, _, _, b) in with_carol] == ["from carol"]
            everything = await collect(alice)
            assert len(everything) == 4

    run(body())


def test_mam_second_device_gets_conversation_then_carbons(hearth):
    async def body():
        async with Clients(hearth, ("alice", "phone"), ("bob", "b1"), plugins=MAM) as (phone, bob):
            await phone.plugin["xep_0280"].enable()
            convo = []
            for i in range(10):
                phone.send_message(mto=bare("bob"), mbody=f"a{i}", mtype="chat")
                await wait_message(bob, f"a{i}")
                bob.send_message(mto=bare("alice"), mbody=f"b{i}", mtype="chat")
                await wait_message(phone, f"b{i}")
                convo += [f"a{i}", f"b{i}"]

            async with Clients(hearth, ("alice", "laptop"), plugins=MAM) as (laptop,):
                history = await collect(laptop, with_jid=bare("bob"), page=7)
                assert [b for (_, _, _, b) in history] == convo

                carbons: asyncio.Queue = asyncio.Queue()
                laptop.add_event_handler("carbon_received", lambda m: carbons.put_nowait(("received", m)))
                laptop.add_event_handler("carbon_sent", lambda m: carbons.put_nowait(("sent", m)))
                await laptop.plugin["xep_0280"].enable()

                # bob answers the phone directly: the laptop gets a received carbon, with the
                # archive's stanza-id inside.
                bob.send_message(mto=f"{bare('alice')}/phone", mbody="to the phone", mtype="chat")
                await wait_message(phone, "to the phone")
                kind, c = await asyncio.wait_for(carbons.get(), 10)
                inner = c["carbon_received"]
                assert kind == "received" and inner["body"] == "to the phone", c
                assert inner.xml.find(NS_SID).get("by") == bare("alice"), c
                # The phone writes: the laptop gets a sent carbon.
                phone.send_message(mto=bare("bob"), mbody="from the phone", mtype="chat")
                await wait_message(bob, "from the phone")
                kind, c = await asyncio.wait_for(carbons.get(), 10)
                assert kind == "sent" and c["carbon_sent"]["body"] == "from the phone", c

                # And both are in the archive after the earlier conversation.
                history = await collect(laptop, with_jid=bare("bob"))
                assert [b for (_, _, _, b) in history] == convo + ["to the phone", "from the phone"]

    run(body(), timeout=120)
