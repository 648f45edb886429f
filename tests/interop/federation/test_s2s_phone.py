"""Issue 6 across federation: OMEMO (PEP), MAM, vCard/avatars and presence after a restart,
between a Hearth account (h.test) and a Prosody account (a.test, reached over SRV port 5299;
Hearth -> a is dialback, a -> Hearth is dialback too, since Prosody a does not trust the lab
CA).

Each test has its own accounts (conftest.py), so their order does not matter; the restart
test comes last in this file and leaves Hearth running. The PEP stanzas are the ones
Conversations (legacy `eu.siacs.conversations.axolotl`) and Conversations 2.x/Dino
(`urn:xmpp:omemo:2`) send: publish-options with `pubsub#access_model=open`, and
`pubsub#max_items=max` for the omemo:2 bundles node. Clients advertise the `+notify`
features through entity capabilities (slixmpp's xep_0115 + xep_0163), so the notifications
across s2s depend on each server asking the other's client for its disco#info.

HEARTH_FED_SUT=prosody passes too (Prosody's mod_pep, mod_mam, mod_vcard in Hearth's place).
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest
from slixmpp.exceptions import IqError

from fedclient import NS_EVENT, NS_MAM, WAIT, Client, Session, iq, next_matching, run, send, subscribe, wait_body, \
    wait_presence
from fedlab import PASSWORD

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
AXOLOTL = "eu.siacs.conversations.axolotl"
OMEMO2 = "urn:xmpp:omemo:2"


def options(**fields: str) -> str:
    """A publish-options form the way Conversations writes it."""
    out = [f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
           f"<field var='FORM_TYPE' type='hidden'><value>{PUBLISH_OPTIONS}</value></field>"]
    for var, value in fields.items():
        out.append(f"<field var='pubsub#{var}'><value>{value}</value></field>")
    out.append("</x></publish-options>")
    return "".join(out)


class Layout:
    """One OMEMO node layout: node names, item ids and payloads."""

    def __init__(self, name: str):
        self.name = name
        self.legacy = name == "axolotl"
        self.devicelist_node = f"{AXOLOTL}.devicelist" if self.legacy else f"{OMEMO2}:devices"
        self.ns = AXOLOTL if self.legacy else OMEMO2

    def bundle_node(self, device: int) -> str:
        return f"{AXOLOTL}.bundles:{device}" if self.legacy else f"{OMEMO2}:bundles"

    def bundle_item(self, device: int) -> str:
        return "current" if self.legacy else str(device)

    def notify_nodes(self) -> list[str]:
        # Conversations asks for the device list only; Dino (omemo:2) for bundles too.
        return [self.devicelist_node] if self.legacy else [self.devicelist_node, f"{OMEMO2}:bundles"]

    def publish_devices(self, devices: list[int]) -> str:
        if self.legacy:
            items = "".join(f"<device id='{d}'/>" for d in devices)
            payload = f"<list xmlns='{AXOLOTL}'>{items}</list>"
        else:
            items = "".join(f"<device id='{d}' label='lab {d}'/>" for d in devices)
            payload = f"<devices xmlns='{OMEMO2}'>{items}</devices>"
        return (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{self.devicelist_node}'>"
                f"<item id='current'>{payload}</item></publish>{options(access_model='open')}</pubsub>")

    def publish_bundle(self, device: int, ik: str) -> str:
        if self.legacy:
            prekeys = "".join(f"<preKeyPublic preKeyId='{i}'>BQ{device}pk{i}=</preKeyPublic>" for i in range(1, 4))
            payload = (f"<bundle xmlns='{AXOLOTL}'>"
                       f"<signedPreKeyPublic signedPreKeyId='1'>BQspk{device}=</signedPreKeyPublic>"
                       f"<signedPreKeySignature>c2lnbmF0dXJl{device}</signedPreKeySignature>"
                       f"<identityKey>{ik}</identityKey><prekeys>{prekeys}</prekeys></bundle>")
            opts = options(access_model="open")
        else:
            prekeys = "".join(f"<pk id='{i}'>pk{device}x{i}=</pk>" for i in range(1, 4))
            payload = (f"<bundle xmlns='{OMEMO2}'><spk id='1'>spk{device}=</spk><spks>c2lnbmF0dXJl{device}</spks>"
                       f"<ik>{ik}</ik><prekeys>{prekeys}</prekeys></bundle>")
            opts = options(max_items="max", access_model="open")
        return (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{self.bundle_node(device)}'>"
                f"<item id='{self.bundle_item(device)}'>{payload}</item></publish>{opts}</pubsub>")

    def fetch_devices(self) -> str:
        return f"<pubsub xmlns='{NS_PUBSUB}'><items node='{self.devicelist_node}'/></pubsub>"

    def fetch_bundle(self, device: int) -> str:
        if self.legacy:  # Conversations: the newest item of the per-device node
            return f"<pubsub xmlns='{NS_PUBSUB}'><items node='{self.bundle_node(device)}' max_items='1'/></pubsub>"
        return (f"<pubsub xmlns='{NS_PUBSUB}'><items node='{self.bundle_node(device)}'>"
                f"<item id='{device}'/></items></pubsub>")

    def devices_in(self, xml) -> set[int]:
        return {int(d.get("id")) for d in xml.iter(f"{{{self.ns}}}device")}

    def ik_in(self, xml) -> str | None:
        tag = "identityKey" if self.legacy else "ik"
        found = [e.text for e in xml.iter(f"{{{self.ns}}}{tag}")]
        return found[0] if found else None


class PepClient(Client):
    """A client that advertises `NODE+notify` through entity capabilities before its initial
    presence, as Conversations and Dino do."""

    notify: list[str] = []

    def __init__(self, jid: str, password: str):
        super().__init__(jid, password)
        self.register_plugin("xep_0115")
        self.register_plugin("xep_0163")

    async def _on_start(self, _event) -> None:
        for node in self.notify:
            self.plugin["xep_0030"].add_feature(f"{node}+notify")
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        await super()._on_start(_event)


def pep_client(nodes: list[str]):
    return type("LabPepClient", (PepClient,), {"notify": nodes})


async def wait_event(c: Client, owner: str, node: str, pred, what: str, timeout: float = WAIT):
    """A PEP notification from `owner` for `node` whose items satisfy `pred`."""

    def match(m) -> bool:
        if m["from"].bare != owner:
            return False
        items = [i for i in m.xml.iter(f"{{{NS_EVENT}}}items") if i.get("node") == node]
        return bool(items) and pred(items[0])

    return await next_matching(c.events, match, f"{what} (PEP event {node} from {owner} at {c.boundjid.bare})",
                               timeout)


# (node layout, peer node): (Hearth user, peer account). Prosody a is reached over SRV with
# dialback both ways, Prosody d over direct TLS with SASL EXTERNAL both ways.
OMEMO_CASES = {
    "axolotl-prosody-a": ("axolotl", "a", "olaf", "ola@a.test"),
    "omemo2-prosody-a": ("omemo2", "a", "omar", "oma@a.test"),
    "axolotl-prosody-d": ("axolotl", "d", "oskar", "odo@d.test"),
    "omemo2-prosody-d": ("omemo2", "d", "otto", "odi@d.test"),
}
STRANGER = "stan@a.test"  # no subscription with anyone


def hearth_login(s: Session, hearth, jid: str, cls=None, resource: str = "lab"):
    return s.login(jid, PASSWORD, hearth.ip, log_tail=hearth.tail, cls=cls, resource=resource)


def prosody_login(s: Session, lab, jid: str, cls=None, resource: str = "lab"):
    node = lab.nodes[{"a.test": "a", "d.test": "d"}[jid.split("@")[1]]]
    return s.login(jid, PASSWORD, node.ip, log_tail=node.tail, cls=cls, resource=resource)


@pytest.mark.parametrize("case", list(OMEMO_CASES), ids=list(OMEMO_CASES))
def test_omemo_devices_and_bundles_across_federation(hearth, lab, case):
    """Both sides publish a device list and a bundle (Conversations' stanzas), each gets the
    other's device list as a +notify notification and fetches it and the bundle across s2s;
    a remote stranger reads the open nodes but not a presence-access one; then each adds a
    device and the other sees the new list live, and a contact's resource coming online later
    gets the last device list (XEP-0163 §4.3.4) across s2s."""
    layout, _, h_user, pj = OMEMO_CASES[case]
    L = Layout(layout)
    hj = f"{h_user}@h.test"
    devs = {hj: 1001, pj: 2002}
    new_devs = {hj: 1111, pj: 2222}
    iks = {hj: "BWhlYXJ0aGlkZW50aXR5", pj: "BXByb3NvZHlpZGVudGl0eQ"}
    cls = pep_client(L.notify_nodes())

    async def body():
        async with Session() as s:
            h = await hearth_login(s, hearth, hj, cls)
            p = await prosody_login(s, lab, pj, cls)
            await subscribe(h, p)
            await subscribe(p, h)
            clients = {hj: h, pj: p}
            # Conversations publishes its bundle first, then the device list naming it.
            for jid, c in clients.items():
                await iq(c, "set", None, L.publish_bundle(devs[jid], iks[jid]))
                await iq(c, "set", None, L.publish_devices([devs[jid]]))
            for jid, c in clients.items():
                other = pj if jid == hj else hj
                await wait_event(c, other, L.devicelist_node, lambda i, o=other: devs[o] in L.devices_in(i),
                                 f"device list with {devs[other]}")
                res = await iq(c, "get", other, L.fetch_devices())
                assert L.devices_in(res.xml) == {devs[other]}, res
                res = await iq(c, "get", other, L.fetch_bundle(devs[other]))
                assert L.ik_in(res.xml) == iks[other], res
            # open nodes are for anyone, across s2s too; the default (presence) access is not
            stranger = await prosody_login(s, lab, STRANGER)
            res = await iq(stranger, "get", hj, L.fetch_devices())
            assert L.devices_in(res.xml) == {devs[hj]}, res
            res = await iq(stranger, "get", hj, L.fetch_bundle(devs[hj]))
            assert L.ik_in(res.xml) == iks[hj], res
            secret = f"urn:xmpp:lab:contacts-only:{layout}"
            await iq(h, "set", None, f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{secret}'><item id='x'>"
                                     f"<note xmlns='urn:xmpp:lab'>for contacts</note></item></publish></pubsub>")
            res = await iq(p, "get", hj, f"<pubsub xmlns='{NS_PUBSUB}'><items node='{secret}'/></pubsub>")
            assert "for contacts" in str(res), res
            with pytest.raises(IqError) as refused:
                await iq(stranger, "get", hj, f"<pubsub xmlns='{NS_PUBSUB}'><items node='{secret}'/></pubsub>")
            assert refused.value.iq["error"]["type"] == "auth", refused.value.iq
            # a second device: bundle, then the list with both; the other side sees it live
            for jid, c in clients.items():
                await iq(c, "set", None, L.publish_bundle(new_devs[jid], iks[jid]))
                await iq(c, "set", None, L.publish_devices([devs[jid], new_devs[jid]]))
            for jid, c in clients.items():
                other = pj if jid == hj else hj
                both = {devs[other], new_devs[other]}
                await wait_event(c, other, L.devicelist_node, lambda i, b=both: L.devices_in(i) == b,
                                 f"updated device list {sorted(both)}")
                res = await iq(c, "get", other, L.fetch_devices())
                assert L.devices_in(res.xml) == both, res
                res = await iq(c, "get", other, L.fetch_bundle(new_devs[other]))
                assert L.ik_in(res.xml) == iks[other], res
            # each side's second resource comes online: the other's server sends it the last
            # device list once it has learnt the new resource's +notify caps
            for jid, other in ((hj, pj), (pj, hj)):
                login = hearth_login(s, hearth, jid, cls, "lab2") if jid == hj else \
                    prosody_login(s, lab, jid, cls, "lab2")
                c2 = await login
                both = {devs[other], new_devs[other]}
                await wait_event(c2, other, L.devicelist_node, lambda i, b=both: L.devices_in(i) == b,
                                 f"last device list {sorted(both)} for a new resource")

    run(body(), timeout=150)


def mam_query(with_jid: str, queryid: str) -> str:
    return (f"<query xmlns='{NS_MAM}' queryid='{queryid}'><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"
            f"<field var='with'><value>{with_jid}</value></field></x></query>")


def test_mam_archive_holds_both_directions_with_remote_contact(hearth, lab):
    """mona@h.test and mo@a.test talk both ways; mona's archive, asked with with=mo@a.test,
    holds both messages in order, each with the stanza-id the live copy carried."""
    hj, pj = "mona@h.test", "mo@a.test"
    stamp = str(int(time.time() * 1000))

    async def body():
        async with Session() as s:
            h = await hearth_login(s, hearth, hj)
            p = await prosody_login(s, lab, pj)
            out_body, in_body = f"to prosody {stamp}", f"to hearth {stamp}"
            send(h, pj, out_body)
            await wait_body(p, hj, out_body)
            send(p, hj, in_body)
            got = await wait_body(h, pj, in_body)
            live_ids = [e.get("id") for e in got.xml.iter("{urn:xmpp:sid:0}stanza-id") if e.get("by") == hj]
            assert len(live_ids) == 1, f"incoming message without Hearth's stanza-id: {got}"
            res = await iq(h, "set", None, mam_query(pj, "q1"))
            fin = res.xml.find(f"{{{NS_MAM}}}fin")
            assert fin is not None and fin.get("complete") == "true", res
            results = []
            while not h.mam.empty():
                results.append(h.mam.get_nowait())
            found = []
            for m in results:
                r = m.xml.find(f"{{{NS_MAM}}}result")
                msg = r.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")
                b = msg.find("{jabber:client}body")
                assert r.get("queryid") == "q1" and r.get("id"), m
                found.append((r.get("id"), msg.get("from", "").split("/")[0], msg.get("to", "").split("/")[0],
                              b.text if b is not None else None))
            mine = [f for f in found if f[3] in (out_body, in_body)]
            assert [(f[1], f[2], f[3]) for f in mine] == [(hj, pj, out_body), (pj, hj, in_body)], found
            assert mine[1][0] == live_ids[0], (mine, live_ids)
            assert all(f[1] in (hj, pj) and f[2] in (hj, pj) for f in found), found  # with= filter

    run(body())


def vcard_set(fn: str) -> str:
    return f"<vCard xmlns='vcard-temp'><FN>{fn}</FN><NICKNAME>{fn.split()[0]}</NICKNAME></vCard>"


def test_vcard_fetched_both_ways(hearth, lab):
    hj, pj = "vera@h.test", "val@a.test"

    async def body():
        async with Session() as s:
            h = await hearth_login(s, hearth, hj)
            p = await prosody_login(s, lab, pj)
            await iq(h, "set", None, vcard_set("Vera Hearth"))
            await iq(p, "set", None, vcard_set("Val Prosody"))
            for c, other, fn in ((p, hj, "Vera Hearth"), (h, pj, "Val Prosody")):
                res = await iq(c, "get", other, "<vCard xmlns='vcard-temp'/>")
                assert res["from"] == other, res
                got = res.xml.find("{vcard-temp}vCard/{vcard-temp}FN")
                assert got is not None and got.text == fn, res

    run(body())


def test_avatar_metadata_and_data_fetched_by_remote_contact(hearth, lab):
    """XEP-0084 avatar published on Hearth (open access, as Conversations does) read by a
    Prosody account across s2s; and the vCard PHOTO conversion (XEP-0398) seen remotely."""
    hj, pj = "vera@h.test", "val@a.test"
    data = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    import base64
    import hashlib

    sha = hashlib.sha1(base64.b64decode(data)).hexdigest()

    async def body():
        async with Session() as s:
            h = await hearth_login(s, hearth, hj)
            p = await prosody_login(s, lab, pj)
            await iq(h, "set", None,
                     f"<pubsub xmlns='{NS_PUBSUB}'><publish node='urn:xmpp:avatar:data'><item id='{sha}'>"
                     f"<data xmlns='urn:xmpp:avatar:data'>{data}</data></item></publish>"
                     f"{options(access_model='open')}</pubsub>")
            await iq(h, "set", None,
                     f"<pubsub xmlns='{NS_PUBSUB}'><publish node='urn:xmpp:avatar:metadata'><item id='{sha}'>"
                     f"<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{sha}' bytes='70' type='image/png' "
                     f"width='1' height='1'/></metadata></item></publish>{options(access_model='open')}</pubsub>")
            res = await iq(p, "get", hj, f"<pubsub xmlns='{NS_PUBSUB}'><items node='urn:xmpp:avatar:metadata'/></pubsub>")
            info = list(res.xml.iter("{urn:xmpp:avatar:metadata}info"))
            assert [i.get("id") for i in info] == [sha], res
            res = await iq(p, "get", hj, f"<pubsub xmlns='{NS_PUBSUB}'><items node='urn:xmpp:avatar:data'>"
                                         f"<item id='{sha}'/></items></pubsub>")
            got = [d.text for d in res.xml.iter("{urn:xmpp:avatar:data}data")]
            assert got == [data], res
            if os.environ.get("HEARTH_FED_SUT") == "prosody":
                return  # Prosody converts to vCard only with mod_vcard_legacy (not loaded)
            res = await iq(p, "get", hj, "<vCard xmlns='vcard-temp'/>")
            binval = res.xml.find("{vcard-temp}vCard/{vcard-temp}PHOTO/{vcard-temp}BINVAL")
            assert binval is not None and "".join(binval.text.split()) == data, res

    run(body())


def test_presence_after_hearth_restart_both_ways(hearth, lab):
    """rita@h.test and rik@a.test are mutual contacts; Hearth restarts; when rita logs in again
    rik sees her available (broadcast) and she sees him (probe answered by Prosody); rik's
    disco#info to her account shows the PEP identity."""
    hj, pj = "rita@h.test", "rik@a.test"

    async def body():
        async with Session() as s:
            h = await hearth_login(s, hearth, hj)
            p = await prosody_login(s, lab, pj)
            await subscribe(h, p)
            await subscribe(p, h)
            await h.close()
        hearth.restart()
        hearth.wait()
        async with Session() as s:
            p = await prosody_login(s, lab, pj)
            await asyncio.sleep(0.5)  # the login's own presences settle
            h = await hearth_login(s, hearth, hj)
            await wait_presence(p, hj, "available")
            await wait_presence(h, pj, "available")
            send(h, pj, "back after the restart")
            await wait_body(p, hj, "back after the restart")
            # a contact's disco#info to the account's bare JID: the PEP identity (XEP-0163 §6.1)
            res = await iq(p, "get", hj, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            ids = [(i.get("category"), i.get("type"))
                   for i in res.xml.iter("{http://jabber.org/protocol/disco#info}identity")]
            assert ("pubsub", "pep") in ids, res

    run(body(), timeout=120)
