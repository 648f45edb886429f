"""Session fixtures of the federation suite: one lab (fedlab.py) for the whole session, torn
down by a finalizer even when a test or the setup fails; Hearth and ejabberd join it on demand.

Needs root (network namespaces) and prosody, dnsmasq, openssl, iproute2; without them the
suite is skipped, unless HEARTH_FED_REQUIRED=1 (set by .ci/run), which turns that into a
failure. HEARTH_FED_EJABBERD=0 leaves ejabberd out (=1 with REQUIRED: it must be there).
HEARTH_FED_SUT=prosody puts a Prosody in Hearth's place, to prove the tests themselves.
HEARTH_FED_KEEP=1 keeps the lab folder (logs, configs) after a passing run too; it is
always kept when something failed.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import fedlab  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
HEARTH_BIN = os.environ.get("HEARTH_BIN", str(REPO / "target" / "release" / "hearth"))
REQUIRED = os.environ.get("HEARTH_FED_REQUIRED") == "1"
EJABBERD_WAIT = float(os.environ.get("HEARTH_FED_EJABBERD_WAIT", "60"))

# Accounts (password fedlab.PASSWORD) by domain.
PROSODY_A = {"a.test": ["pat", "sue", "ola", "oma", "mo", "val", "rik", "stan"], "burst.test": ["bea"], "fo.test": ["fay"], "cn.test": ["cy"],
             "v6.test": ["vic"]}
PROSODY_D = {"d.test": ["dan", "dee", "odo", "odi"]}
EJABBERD_USERS = ["eve", "ed"]
HEARTH_USERS = {"h.test": ["alice", "bob", "carl", "olaf", "omar", "mona", "vera", "rita", "oskar", "otto"],
                "h2.test": ["hal"]}


def _unavailable(why: str):
    if REQUIRED:
        pytest.fail(f"federation lab required (HEARTH_FED_REQUIRED=1) but {why}")
    pytest.skip(why)


class Failures:
    count = 0


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "federation" in str(item.fspath):
        Failures.count += 1
        # What the servers said, next to the failure (the full logs stay in the lab folder).
        args = getattr(item, "funcargs", {})
        lab = args.get("lab")
        if lab is not None:
            peer = args.get("peer")
            for node in (lab.nodes.get("h"), peer[0] if peer else lab.nodes.get("a")):
                if node is not None:
                    rep.sections.append((f"{node.name} log tail ({node.dir})", node.tail(40)))


@pytest.fixture(scope="session")
def lab(request):
    if os.geteuid() != 0:
        _unavailable("not root (network namespaces need it)")
    missing = fedlab.missing_tools()
    if missing:
        _unavailable(f"missing {', '.join(missing)} (apt-get install prosody lua-unbound dnsmasq-base openssl iproute2)")
    t0 = time.monotonic()
    lab = fedlab.Lab()

    def finish():
        lab.down()
        if Failures.count or os.environ.get("HEARTH_FED_KEEP") == "1":
            print(f"\n[fedlab] lab folder kept: {lab.dir}")
        else:
            shutil.rmtree(lab.dir, ignore_errors=True)

    request.addfinalizer(finish)
    lab.acquire()
    lab.remove_stale()
    with_ejabberd = (os.environ.get("HEARTH_FED_EJABBERD") != "0"
                     and not fedlab.missing_tools(with_ejabberd=True))
    nodes = [("h", 10), ("a", 11), ("d", 14)] + ([("e", 15)] if with_ejabberd else [])
    lab.up_net(nodes)
    # d.test's certificate has serverAuth only, like Let's Encrypt's new profile.
    cert_domains = {d: True for d in [*HEARTH_USERS, *PROSODY_A, "e.test"]}
    cert_domains["d.test"] = False
    lab.make_certs(cert_domains)
    lab.start_dns(fedlab.records())
    a = fedlab.Prosody(lab, "a", 11, PROSODY_A, s2s_ports=[5299], s2s_tls_ports=[], trust_lab_ca=False)
    d = fedlab.Prosody(lab, "d", 14, PROSODY_D, s2s_ports=[], s2s_tls_ports=[5399], trust_lab_ca=True)
    lab.nodes.update(a=a, d=d)
    if with_ejabberd:
        # Started now, waited for only by the tests that use it (it takes seconds to boot).
        e = fedlab.Ejabberd(lab, "e", 15, "e.test", EJABBERD_USERS, 5289)
        lab.nodes["e"] = e
        e.start()
    a.start()
    d.start()
    a.wait()
    d.wait()
    print(f"\n[fedlab] lab up in {time.monotonic() - t0:.1f}s at {lab.dir}")
    return lab


@pytest.fixture(scope="session")
def hearth(lab):
    if os.environ.get("HEARTH_FED_SUT") == "prosody":
        # Proves the tests themselves: a Prosody in Hearth's place (same domains, ports, DNS)
        # must pass every one of them.
        h = fedlab.Prosody(lab, "h", 10, HEARTH_USERS, s2s_ports=[fedlab.H_S2S],
                           s2s_tls_ports=[fedlab.H_S2S_TLS], trust_lab_ca=False)
        lab.nodes["h"] = h
        h.start()
        h.wait()
        return h
    if not os.access(HEARTH_BIN, os.X_OK):
        pytest.fail(f"hearth binary not found at {HEARTH_BIN} (set HEARTH_BIN or cargo build --release)")
    h = fedlab.Hearth(lab, HEARTH_BIN, HEARTH_USERS)
    lab.nodes["h"] = h
    h.start()
    try:
        h.wait()
    except fedlab.LabError as e:
        pytest.fail(str(e))
    return h


@pytest.fixture(scope="session")
def ejabberd(lab):
    e = lab.nodes.get("e")
    if e is None:
        if REQUIRED and os.environ.get("HEARTH_FED_EJABBERD") == "1":
            pytest.fail("ejabberd required (HEARTH_FED_EJABBERD=1) but not installed")
        pytest.skip("ejabberd not installed (apt-get install ejabberd) or HEARTH_FED_EJABBERD=0")
    if not getattr(e, "ready", False):
        try:
            secs = e.wait(EJABBERD_WAIT)
        except fedlab.LabError as err:
            pytest.fail(str(err))
        print(f"\n[fedlab] ejabberd ready {secs:.1f}s after start")
        e.ready = True
    return e
