"""Push notifications (XEP-0357): a slixmpp client stands in for the app server (its full JID is
given as the push service in <enable/>), receives the publish IQ when the phone's session is
CSI-inactive or hibernating after a killed connection, checks the summary (count, sender, no
body) and the publish-options, and answers it. slixmpp 1.17 ships no xep_0357 plugin: the
phone sends <enable/> as a raw IQ, the app server catches the publish with a raw handler."""
from __future__ import annotations

import asyncio

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import DOMAIN, QUIET, WAIT, Clients, bare, login, raw_iq, run, wait_message
from test_sm import kill, resume, server, settle, sm_login

APP = f"bob@{DOMAIN}/push"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUSH = "urn:xmpp:push:0"
DATA = "jabber:x:data"


class AppServer:
    """Collects push publish IQs sent to a logged-in client and answers each with a result."""

    def __init__(self, client):
        self.iqs: asyncio.Queue = asyncio.Queue()
        client.register_handler(Callback(
            "push publish",
            MatchXPath(f"{{jabber:client}}iq/{{{PUBSUB}}}pubsub"),
            self._on_publish))

    def _on_publish(self, iq) -> None:
        self.iqs.put_nowait(iq)
        iq.reply().send()

    async def next(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.iqs.get(), timeout)

    async def none(self, quiet: float = QUIET) -> None:
        try:
            iq = await asyncio.wait_for(self.iqs.get(), quiet)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected notification: {iq}")


def summary(iq) -> dict[str, str]:
    """The notification's node, its summary fields by var, and its publish-options."""
    publish = iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
    assert publish is not None, f"no <publish/>: {iq}"
    form = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{DATA}}}x")
    assert form is not None and form.get("type") == "submit", f"no summary form: {iq}"
    out = {"node": publish.get("node")}
    for f in form.iter(f"{{{DATA}}}field"):
        out[f.get("var")] = "".join(v.text or "" for v in f.iter(f"{{{DATA}}}value"))
    for f in iq.xml.iter(f"{{{PUBSUB}}}publish-options"):
        for field in f.iter(f"{{{DATA}}}field"):
            out["option:" + field.get("var")] = "".join(
                v.text or "" for v in field.iter(f"{{{DATA}}}value"))
    return out


ENABLE = (f"<enable xmlns='{PUSH}' jid='{APP}' node='dev-1'>"
          f"<x xmlns='{DATA}' type='submit'>"
          "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
          "<field var='secret'><value>s3cr3t</value></field></x></enable>")


def check(iq, count: int, secret_body: str) -> None:
    s = summary(iq)
    assert str(iq["from"]) == bare("alice"), iq
    assert s["node"] == "dev-1", s
    assert s["FORM_TYPE"] == "urn:xmpp:push:summary", s
    assert s["message-count"] == str(count), s
    assert s["last-message-sender"] == f"{bare('carol')}/r1", s
    assert s["option:secret"] == "s3cr3t", s
    assert "last-message-body" not in s, s
    assert secret_body not in str(iq), f"the body leaked into the notification: {iq}"


def test_push_csi_inactive_notifies_app_server_without_body(hearth):
    async def body():
        async with Clients(hearth, ("bob", "push"), "carol") as (bob, carol):
            app = AppServer(bob)
            async with Clients(hearth, ("alice", "phone"), plugins=("xep_0352",)) as (alice,):
                await raw_iq(alice, "set", ENABLE)
                alice.plugin["xep_0352"].send_inactive()
                await settle(alice)
                carol.send_message(mto=bare("alice"), mbody="meet at noon", mtype="chat")
                iq = await app.next()
                check(iq, 1, "meet at noon")
                # The message itself reached the inactive phone at once.
                await wait_message(alice, "meet at noon")
                # Active again: no notification for a message it gets itself.
                alice.plugin["xep_0352"].send_active()
                await settle(alice)
                carol.send_message(mto=bare("alice"), mbody="still there?", mtype="chat")
                await wait_message(alice, "still there?")
                await app.none()
                # Inactive again: the registration survived the answered notification and
                # the count started over when the phone came back.
                alice.plugin["xep_0352"].send_inactive()
                await settle(alice)
                carol.send_message(mto=bare("alice"), mbody="second round", mtype="chat")
                check(await app.next(), 1, "second round")

    run(body())


def test_push_killed_connection_hibernating_notifies_then_resumes(request):
    srv = server(request, 60)

    async def body():
        async with Clients(srv, ("bob", "push"), "carol") as (bob, carol):
            app = AppServer(bob)
            alice = await sm_login(srv, "alice", "phone")
            try:
                await raw_iq(alice, "set", ENABLE)
                await kill(alice)
                await asyncio.sleep(0.3)  # the server has seen the connection go
                carol.send_message(mto=bare("alice"), mbody="wake up", mtype="chat")
                iq = await app.next()
                check(iq, 1, "wake up")
                await resume(srv, alice)
                await wait_message(alice, "wake up")
            finally:
                await alice.close()

    run(body())


def test_push_offline_account_notifies_and_disable_stops(hearth):
    async def body():
        async with Clients(hearth, ("bob", "push"), "carol") as (bob, carol):
            app = AppServer(bob)
            alice = await login(hearth, "alice", resource="phone")
            await raw_iq(alice, "set", ENABLE)
            await alice.close()
            carol.send_message(mto=bare("alice"), mbody="while you were out", mtype="chat")
            check(await app.next(), 1, "while you were out")
            alice = await login(hearth, "alice", resource="phone")
            try:
                await wait_message(alice, "while you were out")
                await raw_iq(alice, "set", f"<disable xmlns='{PUSH}' jid='{APP}' node='dev-1'/>")
            finally:
                await alice.close()
            carol.send_message(mto=bare("alice"), mbody="and again", mtype="chat")
            await app.none()

    run(body())
