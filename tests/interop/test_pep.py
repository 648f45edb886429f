"""PEP (XEP-0163) seen by slixmpp: OMEMO device lists and bundles in both node layouts
(XEP-0384, with the publish-options Conversations and Dino send), user avatars (XEP-0084) with
their vCard twin (XEP-0398), and bookmarks 2 (XEP-0402) with private-storage compatibility.
Clients advertise `NODE+notify` through entity capabilities (XEP-0115), as real ones do; the
server asks them with disco#info and notifies accordingly."""
from __future__ import annotations

import asyncio
import base64

import pytest
from slixmpp.exceptions import IqError

from conftest import (DOMAIN, QUIET, USERS, WAIT, Client, bare, make_mutual, next_matching, none_matching,
                      raw_iq, run)

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
LEGACY_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
LEGACY_BUNDLES = "eu.siacs.conversations.axolotl.bundles"
OMEMO2_DEVICES = "urn:xmpp:omemo:2:devices"
OMEMO2_BUNDLES = "urn:xmpp:omemo:2:bundles"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PLUGINS = ("xep_0030", "xep_0060", "xep_0115", "xep_0163")


class PepClient(Client):
    """A client whose caps carry `+notify` for `interests` from its first presence on, and
    that queues every PEP event message it gets."""

    def __init__(self, jid: str, password: str, interests: tuple[str, ...], plugins=PLUGINS):
        super().__init__(jid, password, plugins=plugins, get_roster=True, auto_subscriptions=False)
        self.events: asyncio.Queue = asyncio.Queue()
        self.interests = interests
        self.add_event_handler("session_bind", self._interest)
        self.register_handler_raw_events()

    def _interest(self, _jid) -> None:
        if self.interests:
            self.plugin["xep_0163"].add_interest(list(self.interests))

    def register_handler_raw_events(self) -> None:
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.register_handler(Callback(
            "pep event", MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event"),
            lambda m: self.events.put_nowait(m)))


async def pep_login(server, local: str, resource: str, interests: tuple[str, ...] = (),
                    plugins=PLUGINS) -> PepClient:
    c = PepClient(f"{local}@{DOMAIN}/{resource}", USERS[local], interests, plugins)
    c.connect("127.0.0.1", server.port)
    try:
        await asyncio.wait_for(c.started.wait(), WAIT)
    except asyncio.TimeoutError:
        await c.close()
        pytest.fail(f"login {local}: no session\n" + "\n".join(server.log_text().splitlines()[-30:]))
    return c


def event_on(node: str, contains: str = ""):
    """Matches an event message about `node` whose XML contains `contains`."""
    def pred(m) -> bool:
        ev = m.xml.find(f"{{{EVENT}}}event")
        if ev is None:
            return False
        return any(ch.get("node") == node for ch in ev) and contains in str(m)
    return pred


def options(**fields: str) -> str:
    """A publish-options form (XEP-0060 §7.1.5)."""
    out = ("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
           "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>")
    for var, value in fields.items():
        out += f"<field var='pubsub#{var}'><value>{value}</value></field>"
    return out + "</x></publish-options>"


def publish_xml(node: str, item: str, opts: str = "") -> str:
    return f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>{opts}</pubsub>"


async def items_of(client, owner: str, node: str, inner: str = "/>"):
    return await raw_iq(client, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{inner}</pubsub>", to=owner)


def test_omemo_legacy_and_v2_between_two_accounts(hearth):
    """Device lists reach the contact as notifications; bundles are fetched by the contact and
    by a stranger (open access); republishing with the same options works, `max` keeps all
    bundles of omemo:2."""
    async def body():
        interests = (LEGACY_DEVICES, OMEMO2_DEVICES)
        alice = await pep_login(hearth, "alice", "phone", interests)
        bob = await pep_login(hearth, "bob", "laptop", interests)
        carol = await pep_login(hearth, "carol", "pc", interests)
        try:
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            open_ = options(access_model="open")
            # Conversations: device list, then the bundle of its device, both access open.
            await raw_iq(alice, "set", publish_xml(
                LEGACY_DEVICES,
                "<item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='31415'/></list></item>",
                open_))
            await next_matching(bob.events, event_on(LEGACY_DEVICES, "31415"), "legacy device list at bob")
            await raw_iq(alice, "set", publish_xml(
                f"{LEGACY_BUNDLES}:31415",
                "<item id='current'><bundle xmlns='eu.siacs.conversations.axolotl'>"
                "<signedPreKeyPublic signedPreKeyId='1'>U1BL</signedPreKeyPublic>"
                "<signedPreKeySignature>U0lH</signedPreKeySignature><identityKey>SUs=</identityKey>"
                "<prekeys><preKeyPublic preKeyId='1'>UEsx</preKeyPublic></prekeys></bundle></item>",
                open_))
            for who in (bob, carol):
                res = await items_of(who, bare("alice"), f"{LEGACY_BUNDLES}:31415", " max_items='1'/>")
                assert "SUs=" in str(res), res
            # A second device: same options again, no precondition trouble.
            await raw_iq(alice, "set", publish_xml(
                LEGACY_DEVICES,
                "<item id='current'><list xmlns='eu.siacs.conversations.axolotl'><device id='31415'/>"
                "<device id='2718'/></list></item>", open_))
            await next_matching(bob.events, event_on(LEGACY_DEVICES, "2718"), "updated device list at bob")

            # OMEMO 2 (Dino, Conversations 2.x): bundles with max_items=max, item id = device id.
            await raw_iq(alice, "set", publish_xml(
                OMEMO2_DEVICES,
                "<item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='31415'/>"
                "<device id='2718' label='laptop'/></devices></item>",
                options(max_items="max", access_model="open")))
            await next_matching(bob.events, event_on(OMEMO2_DEVICES, "laptop"), "omemo:2 devices at bob")
            bundle_opts = options(max_items="max", access_model="open")
            for dev in ("31415", "2718"):
                await raw_iq(alice, "set", publish_xml(
                    OMEMO2_BUNDLES,
                    f"<item id='{dev}'><bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>U1BL</spk><spks>U0lH</spks>"
                    f"<ik>IK{dev}</ik><prekeys><pk id='1'>UEsx</pk></prekeys></bundle></item>",
                    bundle_opts))
            for dev in ("31415", "2718"):
                res = await items_of(bob, bare("alice"), OMEMO2_BUNDLES, f"><item id='{dev}'/></items>")
                assert f"IK{dev}" in str(res), res
            # Conflicting options are refused (the client then reconfigures).
            with pytest.raises(IqError) as e:
                await raw_iq(alice, "set", publish_xml(
                    OMEMO2_BUNDLES, "<item id='1'><bundle xmlns='urn:xmpp:omemo:2'/></item>",
                    options(access_model="whitelist")))
            assert e.value.iq["error"]["condition"] == "conflict"
            assert "precondition-not-met" in str(e.value.iq), e.value.iq
            # Bob's own devices reach alice too (both directions).
            await raw_iq(bob, "set", publish_xml(
                OMEMO2_DEVICES, "<item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='777'/></devices></item>",
                options(max_items="max", access_model="open")))
            await next_matching(alice.events, event_on(OMEMO2_DEVICES, "777"), "bob's devices at alice")
            # The stranger is not notified.
            await none_matching(carol.events, lambda m: True, "event at carol", QUIET)
        finally:
            for c in (alice, bob, carol):
                await c.close()

    run(body())


def test_contact_coming_online_gets_last_device_list(hearth):
    async def body():
        alice = await pep_login(hearth, "alice", "phone", (OMEMO2_DEVICES,))
        bob = await pep_login(hearth, "bob", "laptop", (OMEMO2_DEVICES,))
        try:
            await make_mutual(alice, bob)
            await raw_iq(alice, "set", publish_xml(
                OMEMO2_DEVICES, "<item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='4242'/></devices></item>",
                options(access_model="open")))
            bob2 = await pep_login(hearth, "bob", "tablet", (OMEMO2_DEVICES,))
            try:
                await next_matching(bob2.events, event_on(OMEMO2_DEVICES, "4242"), "last device list at new resource")
            finally:
                await bob2.close()
        finally:
            for c in (alice, bob):
                await c.close()

    run(body())


def test_avatar_publish_seen_by_contact_and_in_vcard(hearth):
    async def body():
        plugins = PLUGINS + ("xep_0084", "xep_0054")
        alice = await pep_login(hearth, "alice", "phone", plugins=plugins)
        bob = await pep_login(hearth, "bob", "laptop", plugins=plugins)
        try:
            await make_mutual(alice, bob)
            await asyncio.sleep(0.3)
            data = b"\x89PNG fake avatar bytes"
            avatar = alice.plugin["xep_0084"]
            await avatar.publish_avatar(data, timeout=WAIT)
            aid = avatar.generate_id(data)
            await avatar.publish_avatar_metadata({"id": aid, "type": "image/png", "bytes": len(data)}, timeout=WAIT)
            await next_matching(bob.events, event_on("urn:xmpp:avatar:metadata", aid), "avatar metadata at bob")
            got = await bob.plugin["xep_0084"].retrieve_avatar(alice.boundjid.bare, aid, timeout=WAIT)
            assert got["pubsub"]["items"]["item"]["avatar_data"]["value"] == data
            card = await bob.plugin["xep_0054"].get_vcard(bare("alice"), local=False, cached=False, timeout=WAIT)
            binval = card["vcard_temp"]["PHOTO"]["BINVAL"]
            assert binval == data, card
        finally:
            for c in (alice, bob):
                await c.close()

    run(body())


def test_bookmarks2_with_private_storage_compat(hearth):
    async def body():
        alice = await pep_login(hearth, "alice", "phone", (BOOKMARKS,))
        alice2 = await pep_login(hearth, "alice", "desktop", (BOOKMARKS,))
        try:
            opts = options(persist_items="true", max_items="max", send_last_published_item="never",
                           access_model="whitelist")
            await raw_iq(alice, "set", publish_xml(
                BOOKMARKS,
                "<item id='room@muc.example'><conference xmlns='urn:xmpp:bookmarks:1' name='Room' autojoin='true'>"
                "<nick>al</nick></conference></item>", opts))
            await next_matching(alice2.events, event_on(BOOKMARKS, "room@muc.example"), "bookmark at other resource")
            res = await raw_iq(alice2, "get",
                               "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>")
            assert "jid=\"room@muc.example\"" in str(res) and "al</nick>" in str(res), res
            # A legacy client writes private storage: the PEP node follows, with notifications.
            await raw_iq(alice2, "set",
                         "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>"
                         "<conference jid='new@muc.example' name='New' autojoin='true'/></storage></query>")
            await next_matching(alice.events, event_on(BOOKMARKS, "new@muc.example"), "new bookmark at phone")
            res = await items_of(alice, bare("alice"), BOOKMARKS)
            assert "new@muc.example" in str(res) and "room@muc.example" not in str(res), res
        finally:
            for c in (alice, alice2):
                await c.close()

    run(body())
