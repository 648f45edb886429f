#!/usr/bin/env python3
"""sessions_rss.py - hold N authenticated c2s sessions open and report the server's memory.

usage: sessions_rss.py [--host 127.0.0.1] [--port 5222] [--domain localhost] [-n 1000]
                       [--user u%d] [--password pw] [--first 0] [--mech PLAIN|SCRAM-SHA-1]
                       [--pid SERVER_PID] [--concurrency 50] [--timeout 120] [--settle 2]
                       [--json FILE]

Each session: TCP, stream header, STARTTLS (certificate not verified: test servers are
self-signed), stream restart, SASL PLAIN or SCRAM-SHA-1, stream restart, resource bind,
initial presence; then it stays open until all N are up. Accounts are --user % i for i in
[first, first+N), all with --password.

With --pid, VmRSS/VmHWM come from /proc/PID/status: before the logins, with N sessions up
(after --settle seconds), and after all are closed. KiB per session = (RSS_N - RSS_before)/N.
logins/s counts from the first connect to the last completed login. Plain asyncio + ssl, no
XMPP library, so the generator is not the bottleneck. Every phase is bounded by --timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import ssl
import sys
import time

STREAM_NS = "http://etherx.jabber.org/streams"


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[key] = int(rest.split()[0])
    # Private = pages only this process maps (heap, stacks, written data, and the parts of the
    # binary nobody else has mapped); the rest of VmRSS is shared with other processes (libc).
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Private_Clean", "Private_Dirty"):
                    out["Private"] = out.get("Private", 0) + int(rest.split()[0])
    except OSError:
        pass
    return out


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, need))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


class LoginError(Exception):
    pass


class Session:
    def __init__(self, a: argparse.Namespace, user: str, ctx: ssl.SSLContext):
        self.a = a
        self.user = user
        self.ctx = ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = b""

    async def read_until(self, *markers: bytes) -> bytes:
        """Reads until one of `markers` is in the buffer; returns and consumes up to its end."""
        while True:
            for m in markers:
                i = self.buf.find(m)
                if i >= 0:
                    out, self.buf = self.buf[: i + len(m)], self.buf[i + len(m):]
                    return out
            chunk = await self.reader.read(65536)
            if not chunk:
                raise LoginError(f"{self.user}: closed by server; got {self.buf[-300:]!r}")
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                raise LoginError(f"{self.user}: runaway input")

    def send(self, s: str | bytes) -> None:
        self.writer.write(s.encode() if isinstance(s, str) else s)

    async def open_stream(self) -> bytes:
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.a.domain}' version='1.0' "
            f"xmlns='jabber:client' xmlns:stream='{STREAM_NS}'>"
        )
        features = await self.read_until(b"</stream:features>", b"</stream:stream>")
        if b"<stream:error" in features:
            raise LoginError(f"{self.user}: stream error {features[-300:]!r}")
        return features

    async def login(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.a.host, self.a.port)
        await self.open_stream()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        kind, _ = await self.read_element("proceed", "failure")
        if kind != "proceed":
            raise LoginError(f"{self.user}: STARTTLS refused")
        if self.buf:
            raise LoginError(f"{self.user}: data after <proceed/>")
        await self.writer.start_tls(self.ctx, server_hostname=self.a.domain)
        await self.open_stream()
        if self.a.mech == "PLAIN":
            await self.auth_plain()
        else:
            await self.auth_scram_sha1()
        await self.open_stream()
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<resource>rss</resource></bind></iq>"
        )
        m = re.search(rb"<iq[^>]*type=['\"](\w+)['\"]", await self.read_until(b"</iq>"))
        if not m or m.group(1) != b"result":
            raise LoginError(f"{self.user}: bind failed")
        self.send("<presence/>")
        await self.writer.drain()

    async def read_element(self, *names: str) -> tuple[str, bytes]:
        """Reads the next complete top-level element named one of `names` (self-closing or
        not, either quote style); returns its name and text content."""
        alts = "|".join(re.escape(n) for n in names)
        pat = re.compile(rb"<(" + alts.encode() + rb")(?=[\s/>])[^>]*?(?:/>|>(.*?)</\1>)", re.S)
        while True:
            m = pat.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m.group(1).decode(), m.group(2) or b""
            if b"<stream:error" in self.buf and b"</stream:error>" in self.buf:
                raise LoginError(f"{self.user}: stream error {self.buf[-300:]!r}")
            chunk = await self.reader.read(65536)
            if not chunk:
                raise LoginError(f"{self.user}: closed by server; got {self.buf[-300:]!r}")
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                raise LoginError(f"{self.user}: runaway input")

    async def sasl_answer(self) -> tuple[str, bytes]:
        return await self.read_element("success", "failure", "challenge")

    async def auth_plain(self) -> None:
        token = base64.b64encode(f"\0{self.user}\0{self.a.password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        kind, _ = await self.sasl_answer()
        if kind != "success":
            raise LoginError(f"{self.user}: PLAIN {kind}")

    async def auth_scram_sha1(self) -> None:
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={self.user},r={cnonce}"
        gs2 = "n,,"
        self.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
            + base64.b64encode((gs2 + first_bare).encode()).decode() + "</auth>"
        )
        kind, payload = await self.sasl_answer()
        if kind != "challenge":
            raise LoginError(f"{self.user}: SCRAM {kind}")
        server_first = base64.b64decode(payload).decode()
        fields = dict(kv.split("=", 1) for kv in server_first.split(","))
        nonce, salt, iters = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(cnonce):
            raise LoginError(f"{self.user}: bad server nonce")
        salted = hashlib.pbkdf2_hmac("sha1", self.a.password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
        stored_key = hashlib.sha1(client_key).digest()
        without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={nonce}"
        auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth_msg, hashlib.sha1).digest()
        proof = bytes(x ^ y for x, y in zip(client_key, sig))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.send(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
            + base64.b64encode(final.encode()).decode() + "</response>"
        )
        kind, payload = await self.sasl_answer()
        if kind != "success":
            raise LoginError(f"{self.user}: SCRAM {kind}")
        server_key = hmac.new(salted, b"Server Key", hashlib.sha1).digest()
        want = base64.b64encode(hmac.new(server_key, auth_msg, hashlib.sha1).digest()).decode()
        if base64.b64decode(payload).decode() != f"v={want}":
            raise LoginError(f"{self.user}: server signature mismatch")

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.send("</stream:stream>")
            await asyncio.wait_for(self.writer.drain(), 2)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:  # noqa: BLE001
            pass


async def run(a: argparse.Namespace) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    res: dict = dict(n=a.n, mech=a.mech, concurrency=a.concurrency)
    if a.pid:
        st = proc_status(a.pid)
        res["rss_before_kib"] = st.get("VmRSS")
        res["anon_before_kib"] = st.get("RssAnon")
        res["file_before_kib"] = st.get("RssFile")
        res["private_before_kib"] = st.get("Private")
        res["threads"] = st.get("Threads")

    sem = asyncio.Semaphore(a.concurrency)
    sessions: list[Session] = []
    errors: list[str] = []
    last_ok = [0.0]

    async def one(i: int) -> None:
        s = Session(a, a.user % i, ctx)
        async with sem:
            try:
                await asyncio.wait_for(s.login(), a.timeout)
                sessions.append(s)
                last_ok[0] = time.perf_counter()
            except Exception as e:  # noqa: BLE001 - count every failure
                errors.append(f"{type(e).__name__}: {e}")
                await s.close()

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(a.first, a.first + a.n))), a.timeout * 2
        )
    except asyncio.TimeoutError:
        errors.append("overall login phase timed out")
    wall = (last_ok[0] or time.perf_counter()) - t0
    res.update(ok=len(sessions), failed=a.n - len(sessions), login_wall_s=round(wall, 3),
               logins_per_s=round(len(sessions) / wall, 1) if wall > 0 else None,
               first_error=errors[0] if errors else None)

    await asyncio.sleep(a.settle)
    alive = sum(1 for s in sessions if not s.reader.at_eof())
    res["alive_after_settle"] = alive
    if a.pid:
        st = proc_status(a.pid)
        res["rss_n_kib"] = st.get("VmRSS")
        res["hwm_kib"] = st.get("VmHWM")
        res["anon_n_kib"] = st.get("RssAnon")
        res["private_n_kib"] = st.get("Private")
        if sessions:
            res["kib_per_session"] = round((res["rss_n_kib"] - res["rss_before_kib"]) / len(sessions), 2)

    await asyncio.wait_for(asyncio.gather(*(s.close() for s in sessions)), a.timeout)
    if a.pid:
        await asyncio.sleep(a.settle)
        res["rss_after_close_kib"] = proc_status(a.pid).get("VmRSS")
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--domain", default="localhost")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--user", default="u%d", help="account pattern, %%d is the index")
    p.add_argument("--password", default="pw")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--mech", choices=["PLAIN", "SCRAM-SHA-1"], default="PLAIN")
    p.add_argument("--pid", type=int, help="server PID for /proc/PID/status")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--timeout", type=float, default=120.0, help="bound per login and per phase")
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--json", help="append the result as one JSON line to this file")
    a = p.parse_args()
    raise_nofile(a.n + 256)

    res = asyncio.run(run(a))
    print(f"sessions:           {res['ok']}/{a.n} ok ({a.mech}, concurrency {a.concurrency})")
    print(f"logins/s:           {res['logins_per_s']} ({res['login_wall_s']} s)")
    if a.pid:
        print(f"RSS before:         {res.get('rss_before_kib')} KiB (anon {res.get('anon_before_kib')}, "
              f"file {res.get('file_before_kib')}, private {res.get('private_before_kib')})")
        print(f"RSS with sessions:  {res.get('rss_n_kib')} KiB (HWM {res.get('hwm_kib')} KiB, "
              f"anon {res.get('anon_n_kib')}, private {res.get('private_n_kib')})")
        print(f"KiB per session:    {res.get('kib_per_session')}")
        print(f"RSS after close:    {res.get('rss_after_close_kib')} KiB")
    if res["first_error"]:
        print(f"first error:        {res['first_error']}")
    print(json.dumps(res))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0 if res["ok"] == a.n else 1


if __name__ == "__main__":
    sys.exit(main())
