"""Hearth federating with real peers in the lab (issue 4, "Tests that must exist and pass").

Hearth hosts h.test (published only as `_xmpp-server` on the non-standard port 5279) and h2.test
(published only as `_xmpps-server`, direct TLS on 5280); it trusts the lab CA. Peers: Prosody
a.test (SRV to port 5299 only; it does not trust the lab CA, so Hearth -> a is dialback),
Prosody d.test (XEP-0368 direct TLS only; trusts the lab CA, so SASL EXTERNAL both ways; its
certificate has serverAuth only), ejabberd e.test (SRV to port 5289) when installed. Each test
uses its own accounts or its own remote domain, so their order does not matter (the peer
restart test leaves d running); every wait is bounded (fedclient.WAIT).

HEARTH_FED_SUT=prosody runs the same tests against a Prosody in Hearth's place: they all pass
there (the two that read Hearth's log or need EXTERNAL from it skip), which proves the tests.
"""
from __future__ import annotations

import asyncio

import pytest

from fedclient import (WAIT, RawS2s, Session, disco_info, identities, run, send, subscribe, wait_body,
                       wait_error)
from fedlab import H_S2S, PASSWORD

# Peers as (node, domain, user for messages and IQs, user for subscriptions).
PEERS = {
    "prosody-srv-port": ("a", "a.test", "pat", "sue"),
    "prosody-direct-tls-only": ("d", "d.test", "dan", "dee"),
    "ejabberd": ("e", "e.test", "eve", "ed"),
}


@pytest.fixture(params=list(PEERS), ids=list(PEERS))
def peer(request, lab):
    node, domain, user, sub_user = PEERS[request.param]
    if node == "e":
        request.getfixturevalue("ejabberd")
    return lab.nodes[node], domain, user, sub_user


def hearth_login(s: Session, hearth, jid: str):
    return s.login(jid, PASSWORD, hearth.ip, log_tail=hearth.tail)


def peer_login(s: Session, node, jid: str):
    return s.login(jid, PASSWORD, node.ip, log_tail=node.tail)


class TestBothWays:
    def test_message_hearth_to_peer_arrives(self, hearth, peer):
        node, domain, user, _ = peer

        async def body():
            async with Session() as s:
                alice = await hearth_login(s, hearth, "alice@h.test")
                them = await peer_login(s, node, f"{user}@{domain}")
                send(alice, f"{user}@{domain}", f"hello {domain} from hearth")
                await wait_body(them, "alice@h.test", f"hello {domain} from hearth")

        run(body())

    def test_message_peer_to_hearth_over_srv_port_arrives(self, hearth, peer):
        node, domain, user, _ = peer

        async def body():
            async with Session() as s:
                alice = await hearth_login(s, hearth, "alice@h.test")
                them = await peer_login(s, node, f"{user}@{domain}")
                send(them, "alice@h.test", f"hello hearth from {domain}")
                await wait_body(alice, f"{user}@{domain}", f"hello hearth from {domain}")

        run(body())

    def test_message_peer_to_hearth_over_direct_tls_arrives(self, hearth, peer):
        """h2.test has only `_xmpps-server` (XEP-0368): Hearth's direct-TLS s2s listener."""
        node, domain, user, _ = peer

        async def body():
            async with Session() as s:
                hal = await hearth_login(s, hearth, "hal@h2.test")
                them = await peer_login(s, node, f"{user}@{domain}")
                send(them, "hal@h2.test", f"direct tls from {domain}")
                await wait_body(hal, f"{user}@{domain}", f"direct tls from {domain}")
                send(hal, f"{user}@{domain}", f"direct tls reply to {domain}")
                await wait_body(them, "hal@h2.test", f"direct tls reply to {domain}")

        run(body())

    def test_subscriptions_both_ways_subscribed_and_available(self, hearth, peer):
        node, domain, _, sub_user = peer

        async def body():
            async with Session() as s:
                bob = await hearth_login(s, hearth, "bob@h.test")
                them = await peer_login(s, node, f"{sub_user}@{domain}")
                await subscribe(bob, them)  # Hearth user asks, remote contact approves
                await subscribe(them, bob)  # and the other way

        run(body())

    def test_disco_info_iq_both_ways_answered(self, hearth, peer):
        node, domain, user, _ = peer

        async def body():
            async with Session() as s:
                alice = await hearth_login(s, hearth, "alice@h.test")
                them = await peer_login(s, node, f"{user}@{domain}")
                res = await disco_info(alice, domain)
                assert res["type"] == "result" and res["from"] == domain, res
                assert ("server", "im") in identities(res), res
                res = await disco_info(them, "h.test")
                assert res["type"] == "result" and res["from"] == "h.test", res
                assert ("server", "im") in identities(res), res
                # and client to client, full JID to full JID (slixmpp answers disco#info itself)
                res = await disco_info(alice, str(them.boundjid))
                assert res["type"] == "result" and res["from"] == them.boundjid, res
                res = await disco_info(them, str(alice.boundjid))
                assert res["type"] == "result" and res["from"] == alice.boundjid, res

        run(body())


def test_auth_external_with_server_auth_only_cert_and_dialback_both_used(hearth, lab):
    """Both XEP-0178 and XEP-0220 happen in the lab: Prosody d trusts the lab CA and its own
    certificate has serverAuth only (Let's Encrypt's new profile), so d -> h.test must be SASL
    EXTERNAL; Prosody a does not trust the lab CA, so h.test -> a.test must be dialback.
    Read from Hearth's log ("s2s A -> B: ... (SaslExternal|Dialback)" lines)."""
    a, d = lab.nodes["a"], lab.nodes["d"]
    if isinstance(hearth, type(a)):
        pytest.skip("reads Hearth's log")

    async def body():
        async with Session() as s:
            alice = await hearth_login(s, hearth, "alice@h.test")
            pat = await peer_login(s, a, "pat@a.test")
            dan = await peer_login(s, d, "dan@d.test")
            send(alice, "pat@a.test", "auth check a")
            await wait_body(pat, "alice@h.test", "auth check a")
            send(dan, "alice@h.test", "auth check d")
            await wait_body(alice, "dan@d.test", "auth check d")

    run(body())
    lines = hearth.log_text().splitlines()

    def seen(pair: str, how: str) -> bool:
        return any(f"s2s {pair}:" in line and f"({how})" in line for line in lines)

    assert seen("d.test -> h.test", "SaslExternal"), \
        "no 's2s d.test -> h.test: ... (SaslExternal)' in Hearth's log:\n" + "\n".join(
            line for line in lines if "d.test" in line and "s2s" in line)
    assert seen("h.test -> a.test", "Dialback"), \
        "no 's2s h.test -> a.test: ... (Dialback)' in Hearth's log:\n" + "\n".join(
            line for line in lines if "a.test" in line and "s2s" in line)


@pytest.mark.parametrize("domain,why", [
    ("dot.test", "SRV target '.': service decidedly not available"),
    ("nx.test", "NXDOMAIN for SRV and for the domain's own address"),
], ids=["dot-target", "nxdomain"])
def test_message_to_unresolvable_domain_bounces_remote_server_not_found(hearth, domain, why):
    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            mid = f"bounce-{domain}"
            send(carl, f"nobody@{domain}", "to nowhere", mid=mid)
            err = await wait_error(carl, mid)
            assert err["error"]["condition"] == "remote-server-not-found", f"{why}: {err}"
            assert err["from"].domain == domain, err

    run(body())


def test_message_all_targets_dead_bounces_remote_server_error(hearth):
    """dead.test's only SRV target refuses connections: the queued stanza comes back."""
    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            send(carl, "nobody@dead.test", "to a dead server", mid="bounce-dead")
            err = await wait_error(carl, "bounce-dead")
            assert err["error"]["condition"] in ("remote-server-not-found", "remote-server-timeout"), err

    run(body())


def test_message_to_unknown_remote_user_error_comes_back(hearth, lab):
    """The peer's error for a user it does not have travels back over s2s to the sender."""
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            await peer_login(s, a, "pat@a.test")  # a.test is up; only the user is unknown
            send(carl, "nobody@a.test", "to no one", mid="bounce-user")
            err = await wait_error(carl, "bounce-user")
            assert err["from"].bare == "nobody@a.test", err
            assert err["error"]["condition"] == "service-unavailable", err

    run(body())


def test_message_dead_primary_srv_uses_secondary(hearth, lab):
    """fo.test: priority 0 -> a closed port, priority 10 -> Prosody a."""
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            fay = await peer_login(s, a, "fay@fo.test")
            send(carl, "fay@fo.test", "past the dead primary")
            await wait_body(fay, "carl@h.test", "past the dead primary")
            send(fay, "carl@h.test", "and back")
            await wait_body(carl, "fay@fo.test", "and back")

    run(body())


def test_message_srv_target_cname_followed(hearth, lab):
    """cn.test's SRV target is a CNAME to Prosody a's host name."""
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            cy = await peer_login(s, a, "cy@cn.test")
            send(carl, "cy@cn.test", "through a cname")
            await wait_body(cy, "carl@h.test", "through a cname")

    run(body())


def test_message_srv_target_with_aaaa_only_reached_over_ipv6(hearth, lab):
    """v6.test's SRV target has an AAAA record and no A record."""
    if not lab.ipv6:
        pytest.skip("no IPv6 in this kernel")
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            vic = await peer_login(s, a, "vic@v6.test")
            send(carl, "vic@v6.test", "over ipv6")
            await wait_body(vic, "carl@h.test", "over ipv6")

    run(body())


BURST = 40


def test_burst_while_connecting_all_arrive_in_order(hearth, lab):
    """burst.test is used by no other test: the first stanza starts the s2s connection (DNS,
    TCP, TLS, dialback both ways) and the other ones are sent before it can be ready."""
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            bea = await peer_login(s, a, "bea@burst.test")
            for i in range(BURST):
                send(carl, "bea@burst.test", f"burst {i}")
            got = []
            while len(got) < BURST:
                try:
                    m = await asyncio.wait_for(bea.messages.get(), WAIT)
                except asyncio.TimeoutError:
                    raise AssertionError(f"burst: after {len(got)} messages nothing for {WAIT}s: {got}") from None
                if m["from"].bare == "carl@h.test":
                    got.append(m["body"])
            assert got == [f"burst {i}" for i in range(BURST)]

    run(body())


def test_peer_down_bounces_then_back_is_retried(hearth, lab):
    """Prosody d stops (its streams with Hearth close): a message bounces; d starts again: the
    next message reaches it over a new connection. Runs last; leaves d running."""
    d = lab.nodes["d"]

    async def body():
        async with Session() as s:
            carl = await hearth_login(s, hearth, "carl@h.test")
            dan = await peer_login(s, d, "dan@d.test")
            send(carl, "dan@d.test", "before the restart")
            await wait_body(dan, "carl@h.test", "before the restart")
            await dan.close()
            d.stop()
            try:
                send(carl, "dan@d.test", "while down", mid="bounce-down")
                err = await wait_error(carl, "bounce-down", timeout=60)
                assert err["error"]["condition"] in ("remote-server-not-found", "remote-server-timeout"), err
            finally:
                d.start()
                d.wait()
            dan = await peer_login(s, d, "dan@d.test")
            send(carl, "dan@d.test", "after the restart")
            await wait_body(dan, "carl@h.test", "after the restart")

    run(body(), timeout=150)


def test_spoofed_from_on_authenticated_stream_not_delivered(hearth, lab):
    """A stream authenticated (SASL EXTERNAL, lab certificate) as a.test carries a stanza from
    a.test, which arrives, then one claiming to be from d.test, which must not."""
    certs = lab.certs
    if isinstance(hearth, type(lab.nodes["a"])):
        pytest.skip("the Prosody stand-in does not trust the lab CA, so it offers no EXTERNAL")

    async def body():
        async with Session() as s:
            alice = await hearth_login(s, hearth, "alice@h.test")
            loop = asyncio.get_running_loop()
            raw = await loop.run_in_executor(None, lambda: RawS2s(
                hearth.ip, H_S2S, "a.test", "h.test", str(certs / "a.test.crt"), str(certs / "a.test.key")))
            try:
                raw.send(f"<message from='pat@a.test/x' to='{alice.boundjid}' type='chat' id='ok1'>"
                         "<body>raw legit</body></message>")
                await wait_body(alice, "pat@a.test", "raw legit")
                raw.send(f"<message from='dan@d.test/x' to='{alice.boundjid}' type='chat' id='spoof1'>"
                         "<body>raw spoofed</body></message>")
                answer = await loop.run_in_executor(None, raw.read_rest, 3.0)
            finally:
                raw.close()
            while not alice.messages.empty():
                m = alice.messages.get_nowait()
                assert m["body"] != "raw spoofed", f"spoofed stanza delivered: {m}"
            # refused visibly: RFC 6120 §4.9.3.9 <invalid-from/> stream error (or a stanza error)
            assert b"invalid-from" in answer or b"type='error'" in answer or b'type="error"' in answer, answer

    run(body())
