"""slixmpp clients for the federation tests: log in to any lab server by address, queue what
arrives, and wait for it with bounded timeouts."""
from __future__ import annotations

import asyncio
import ssl

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

WAIT = 20.0  # one expected stanza across servers (s2s setup + dialback included)
DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_MAM = "urn:xmpp:mam:2"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str):
        super().__init__(jid, password)
        self.register_plugin("xep_0030")  # answers disco#info itself
        # Subscriptions are answered by the tests, never by the library.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        # Lab certificates come from a lab CA the client does not know.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_plaintext = False
        self.whitespace_keepalive = False
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.gone = asyncio.Event()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        # PEP notifications and MAM results carry no body: slixmpp's `message` event skips them.
        self.events: asyncio.Queue = asyncio.Queue()
        self.mam: asyncio.Queue = asyncio.Queue()
        self.register_handler(Callback("lab pep event", MatchXPath(f"{{jabber:client}}message/{{{NS_EVENT}}}event"),
                                       lambda m: self.events.put_nowait(m)))
        self.register_handler(Callback("lab mam result", MatchXPath(f"{{jabber:client}}message/{{{NS_MAM}}}result"),
                                       lambda m: self.mam.put_nowait(m)))
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_auth", lambda _s: self.failed.set())
        self.add_event_handler("disconnected", lambda _e: self.gone.set())
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("message_error", lambda m: self.errors.put_nowait(m))
        self.add_event_handler("presence", lambda p: self.presences.put_nowait(p))

    def _on_message(self, m) -> None:
        if m["type"] != "error":
            self.messages.put_nowait(m)

    async def _on_start(self, _event) -> None:
        try:
            await self.get_roster(timeout=WAIT)
        except Exception:
            pass
        self.send_presence()
        self.started.set()

    async def close(self) -> None:
        if self.transport is not None:
            self.disconnect(wait=1.0)
            try:
                await asyncio.wait_for(self.gone.wait(), 3)
            except asyncio.TimeoutError:
                self.abort()
        self.cancel_connection_attempt()


async def login(jid: str, password: str, ip: str, port: int = 5222, log_tail=None, cls=None,
                resource: str = "lab") -> Client:
    c = (cls or Client)(f"{jid}/{resource}", password)
    c.connect(ip, port)
    started = asyncio.ensure_future(c.started.wait())
    failed = asyncio.ensure_future(c.failed.wait())
    done, pending = await asyncio.wait({started, failed}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    if started not in done:
        await c.close()
        why = "authentication failed" if failed in done else f"no session within {WAIT}s"
        tail = f"\nserver log tail:\n{log_tail()}" if log_tail else ""
        raise AssertionError(f"login {jid} at {ip}:{port}: {why}{tail}")
    return c


async def next_matching(queue: asyncio.Queue, pred, what: str, timeout: float = WAIT):
    seen = []

    async def loop():
        while True:
            item = await queue.get()
            if pred(item):
                return item
            seen.append(item)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        shown = "\n".join(str(x) for x in seen[-10:])
        raise AssertionError(f"no {what} within {timeout}s; other stanzas seen:\n{shown}") from None


async def wait_body(c: Client, frm: str, body: str, timeout: float = WAIT):
    return await next_matching(c.messages, lambda m: m["from"].bare == frm and m["body"] == body,
                               f"message {body!r} from {frm} at {c.boundjid.bare}", timeout)


async def wait_presence(c: Client, frm: str, ptype: str, timeout: float = WAIT):
    return await next_matching(c.presences, lambda p: p["from"].bare == frm and p["type"] == ptype,
                               f"presence type={ptype} from {frm} at {c.boundjid.bare}", timeout)


async def wait_error(c: Client, mid: str, timeout: float = WAIT):
    return await next_matching(c.errors, lambda m: m["id"] == mid,
                               f"message error for id {mid} at {c.boundjid.bare}", timeout)


async def iq(c: Client, typ: str, to: str | None, payload: str, timeout: float = WAIT):
    """An IQ with a raw XML payload (exactly the stanza a client app sends); returns the result
    (raises IqError on an error reply, IqTimeout without one)."""
    q = c.Iq()
    q["type"] = typ
    if to is not None:
        q["to"] = to
    q.append(ET.fromstring(payload))
    return await q.send(timeout=timeout)


def send(c: Client, to: str, body: str, mid: str | None = None) -> None:
    m = c.make_message(mto=to, mbody=body, mtype="chat")
    if mid is not None:
        m["id"] = mid
    m.send()


async def disco_info(c: Client, to: str, timeout: float = WAIT):
    """disco#info to `to`; returns the result stanza (raises IqError/IqTimeout)."""
    iq = c.Iq()
    iq["type"] = "get"
    iq["to"] = to
    iq.append(ET.fromstring(f"<query xmlns='{DISCO_INFO}'/>"))
    return await iq.send(timeout=timeout)


def identities(iq) -> list[tuple[str, str]]:
    return [(i.get("category"), i.get("type")) for i in iq.xml.iter(f"{{{DISCO_INFO}}}identity")]


async def subscribe(user: Client, contact: Client) -> None:
    """user asks contact, contact approves: user sees `subscribed` and then the contact's
    available presence (RFC 6121 §3.1.5: the contact's server sends it after approval)."""
    u, k = user.boundjid.bare, contact.boundjid.bare
    user.send_presence(pto=k, ptype="subscribe")
    await wait_presence(contact, u, "subscribe")
    contact.send_presence(pto=u, ptype="subscribed")
    await wait_presence(user, k, "subscribed")
    await wait_presence(user, k, "available")


class Session:
    """`async with Session() as s: a = await s.login(...)`: closes every client on the way out."""

    def __init__(self):
        self.clients: list[Client] = []

    async def __aenter__(self):
        return self

    async def login(self, *args, **kw) -> Client:
        c = await login(*args, **kw)
        self.clients.append(c)
        return c

    async def __aexit__(self, *_exc):
        for c in self.clients:
            await c.close()


def run(coro, timeout: float = 90):
    """Runs one async test body on a fresh loop, bounded."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        loop.close()
        asyncio.set_event_loop(None)


class RawS2s:
    """A hand-driven s2s stream to a lab server (blocking, every read bounded): STARTTLS, then
    SASL EXTERNAL with a lab certificate. For what no real peer would send (spoofed `from`)."""

    def __init__(self, ip: str, port: int, frm: str, to: str, cert: str, key: str, timeout: float = 10):
        import socket

        self.frm, self.to, self.timeout = frm, to, timeout
        self.sock = socket.create_connection((ip, port), timeout=timeout)
        self.buf = b""
        self.header()
        self.until(b"</stream:features>")
        self.sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.until(b"<proceed")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(cert, key)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=to)
        self.buf = b""
        self.header()
        features = self.until(b"</stream:features>")
        if b"EXTERNAL" not in features:
            raise AssertionError(f"no SASL EXTERNAL offered to {frm}: {features!r}")
        import base64

        self.sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                          + base64.b64encode(frm.encode()) + b"</auth>")
        self.until(b"<success")
        self.buf = b""
        self.header()
        self.until(b"</stream:features>")

    def header(self) -> None:
        self.sock.sendall(
            f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
            f"xmlns:stream='http://etherx.jabber.org/streams' from='{self.frm}' to='{self.to}' "
            "version='1.0'>".encode())

    def until(self, marker: bytes, limit: int = 65536) -> bytes:
        """Reads until `marker` has arrived; returns (and consumes) everything up to it."""
        import time

        deadline = time.monotonic() + self.timeout
        while marker not in self.buf:
            if time.monotonic() > deadline or len(self.buf) > limit:
                raise AssertionError(f"no {marker!r} from the server; got {self.buf[-500:]!r}")
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"stream closed before {marker!r}; got {self.buf[-500:]!r}")
            self.buf += chunk
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def send(self, xml: str) -> None:
        self.sock.sendall(xml.encode())

    def read_rest(self, secs: float) -> bytes:
        """Whatever the server sends within `secs` (stops early if it closes)."""
        import time

        deadline = time.monotonic() + secs
        out = self.buf
        self.buf = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(4096)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
