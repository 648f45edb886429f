"""The lab proves itself without Hearth: Prosody a.test (STARTTLS on a non-standard port, SRV
only) and Prosody d.test (XEP-0368 direct TLS only) federate both ways through the lab DNS, and
the negative records fail as they should. If these fail, a Hearth failure means nothing."""
from __future__ import annotations

from fedclient import Session, run, send, subscribe, wait_body, wait_error
from fedlab import PASSWORD


def test_lab_dns_answers_only_the_test_zone(lab):
    assert lab.dns_query("xmpp.a.test", 1) == 0
    assert lab.dns_query("_xmpp-server._tcp.a.test", 33) == 0
    assert lab.dns_query("nx.test", 1) == 3  # NXDOMAIN
    assert lab.dns_query("example.com", 1) == 5  # REFUSED: never forwarded


def test_lab_prosody_messages_and_subscriptions_both_ways(lab):
    a, d = lab.nodes["a"], lab.nodes["d"]

    async def body():
        async with Session() as s:
            pat = await s.login("pat@a.test", PASSWORD, a.ip, log_tail=a.tail)
            dan = await s.login("dan@d.test", PASSWORD, d.ip, log_tail=d.tail)
            # a -> d: only `_xmpps-server` exists for d.test; d -> a: only SRV to port 5299
            send(pat, "dan@d.test", "lab a->d")
            await wait_body(dan, "pat@a.test", "lab a->d")
            send(dan, "pat@a.test", "lab d->a")
            await wait_body(pat, "dan@d.test", "lab d->a")
            sue = await s.login("sue@a.test", PASSWORD, a.ip, log_tail=a.tail)
            dee = await s.login("dee@d.test", PASSWORD, d.ip, log_tail=d.tail)
            await subscribe(sue, dee)
            await subscribe(dee, sue)

    run(body())


def test_lab_prosody_dot_target_bounces(lab):
    a = lab.nodes["a"]

    async def body():
        async with Session() as s:
            pat = await s.login("pat@a.test", PASSWORD, a.ip, log_tail=a.tail)
            send(pat, "nobody@dot.test", "to nowhere", mid="lab-dot")
            err = await wait_error(pat, "lab-dot")
            assert err["error"]["condition"] in ("remote-server-not-found", "remote-server-timeout"), err

    run(body())
