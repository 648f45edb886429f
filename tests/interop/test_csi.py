"""Client state indication (XEP-0352) seen by slixmpp's xep_0352 plugin: while alice is inactive
a presence flood is held and collapsed to the latest presence per contact full JID, a message
with a body is delivered at once after what was held (order kept), and <active/> releases
the rest in order."""
from __future__ import annotations

import asyncio

from conftest import DOMAIN, QUIET, WAIT, Clients, bare, raw_iq, run

CSI = ("xep_0352",)


class Log:
    """Everything alice receives (presence and messages), in arrival order."""

    def __init__(self, c):
        self.items: list[tuple[str, str, str]] = []
        self.changed = asyncio.Event()
        c.add_event_handler("presence", lambda p: self._add(("presence", str(p["from"]), p["status"])))
        c.add_event_handler("message", lambda m: self._add(("message", str(m["from"]), m["body"])))

    def _add(self, item) -> None:
        self.items.append(item)
        self.changed.set()

    async def wait_for(self, pred, what: str, timeout: float = WAIT):
        async def loop():
            while not any(pred(i) for i in self.items):
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} within {timeout}s; got {self.items}") from None


async def settle(c) -> None:
    await raw_iq(c, "get", "<ping xmlns='urn:xmpp:ping'/>", to=DOMAIN)


def test_csi_presence_flood_held_collapsed_message_at_once_in_order(hearth):
    async def body():
        async with Clients(hearth, ("alice", "phone"), ("bob", "b"), ("carol", "c"), plugins=CSI) as (alice, bob, carol):
            assert alice.plugin["xep_0352"].enabled, "no <csi/> stream feature"
            log = Log(alice)
            alice.plugin["xep_0352"].send_inactive()
            await settle(alice)
            to = f"{bare('alice')}/phone"
            for i in range(50):
                bob.send_presence(pto=to, pstatus=f"bob {i}")
                carol.send_presence(pto=to, pstatus=f"carol {i}")
            await settle(bob)
            await settle(carol)
            await asyncio.sleep(QUIET)
            assert log.items == [], f"held presence delivered while inactive: {log.items}"
            bob.send_message(mto=to, mbody="urgent", mtype="chat")
            await log.wait_for(lambda i: i == ("message", f"{bare('bob')}/b", "urgent"), "the message")
            # Exactly the latest presence of each contact, before the message.
            assert log.items == [
                ("presence", f"{bare('bob')}/b", "bob 49"),
                ("presence", f"{bare('carol')}/c", "carol 49"),
                ("message", f"{bare('bob')}/b", "urgent"),
            ], log.items
            # Still inactive: more presence waits again; active releases it in order.
            carol.send_presence(pto=to, pstatus="carol late")
            bob.send_presence(pto=to, pstatus="bob late")
            await settle(carol)
            await settle(bob)
            await asyncio.sleep(QUIET)
            assert len(log.items) == 3, log.items
            alice.plugin["xep_0352"].send_active()
            await log.wait_for(lambda i: i[2] == "bob late", "the released presence")
            assert log.items[3:] == [
                ("presence", f"{bare('carol')}/c", "carol late"),
                ("presence", f"{bare('bob')}/b", "bob late"),
            ], log.items
            # Active: presence at once.
            bob.send_presence(pto=to, pstatus="bob now")
            await log.wait_for(lambda i: i[2] == "bob now", "presence while active", timeout=WAIT)

    run(body())


def test_csi_inactive_messages_delivered_at_once_in_order(hearth):
    async def body():
        async with Clients(hearth, ("alice", "phone"), ("bob", "b"), plugins=CSI) as (alice, bob):
            assert alice.plugin["xep_0352"].enabled, "no <csi/> stream feature"
            log = Log(alice)
            alice.plugin["xep_0352"].send_inactive()
            await settle(alice)
            to = f"{bare('alice')}/phone"
            for i in range(20):
                bob.send_message(mto=to, mbody=f"m{i}", mtype="chat")
                if i % 5 == 0:
                    bob.send_presence(pto=to, pstatus=f"s{i}")
            await log.wait_for(lambda i: i[2] == "m19", "all messages")
            got = [i[2] for i in log.items]
            assert [g for g in got if g.startswith("m")] == [f"m{i}" for i in range(20)], got
            # Each presence arrived before the message sent after it.
            for i in range(0, 20, 5):
                assert got.index(f"s{i}") < got.index(f"m{i + 1}"), got

    run(body())
