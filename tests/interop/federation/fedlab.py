"""A throw-away federation lab: network namespaces on a bridge, a lab CA, a DNS server that
knows only the test zone, real peer servers (Prosody, optionally ejabberd) and Hearth.

Topology (NET = $HEARTH_FEDLAB_NET, default 10.47.93, and NET6 = fd47:93::/64 besides where
the kernel has IPv6; PREFIX = $HEARTH_FEDLAB_PREFIX, default
hfed): netns PREFIX-hub holds bridge br0 (NET.1) and dnsmasq on NET.53:53; every server lives in
its own netns PREFIX-<node> with one veth on the bridge and no default route, so nothing it does
can leave the lab. The root netns gets NET.2 on a veth into the bridge, so the test process's
XMPP clients reach the servers' c2s ports directly. Servers are told the lab DNS address in
their own configs; only ejabberd (whose libc lookups read /etc/resolv.conf) gets
/etc/netns/PREFIX-e/resolv.conf, removed with its namespace.

Names in the zone (all under `.test`, which dnsmasq answers itself and never forwards):

  h.test     Hearth          _xmpp-server  -> xmpp.h.test:5279 (STARTTLS, non-standard port)
  h2.test    Hearth          _xmpps-server -> xmpp.h.test:5280 (direct TLS only)
  a.test     Prosody a       _xmpp-server  -> xmpp.a.test:5299 (nothing on 5269: SRV only)
  burst.test Prosody a       same as a.test (a fresh domain for the connection-setup burst)
  fo.test    Prosody a       prio 0 -> xmpp.a.test:5999 (closed), prio 10 -> xmpp.a.test:5299
  cn.test    Prosody a       _xmpp-server  -> alias.cn.test:5299, alias.cn.test CNAME xmpp.a.test
  v6.test    Prosody a       _xmpp-server  -> xmpp6.a.test:5299, which has an AAAA record only
  d.test     Prosody d       _xmpps-server -> xmpp.d.test:5399 only (XEP-0368 direct TLS only)
  e.test     ejabberd e      _xmpp-server  -> xmpp.e.test:5289 (if ejabberd is installed)
  dead.test  -               _xmpp-server  -> xmpp.a.test:5999 only (closed port)
  dot.test   -               _xmpp-server  -> "." (service decidedly not available)
  nx.test    -               nothing at all (NXDOMAIN for every name)

Every start is bounded; `down()` kills every process in the lab's namespaces and deletes them,
and `up()` first removes a lab left behind by a killed run (same prefix).
"""
from __future__ import annotations

import fcntl
import glob
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

PREFIX = os.environ.get("HEARTH_FEDLAB_PREFIX", "hfed")
NET = os.environ.get("HEARTH_FEDLAB_NET", "10.47.93")
NET6 = os.environ.get("HEARTH_FEDLAB_NET6", "fd47:93::")  # a /64 of unique local addresses
DNS_IP = f"{NET}.53"
ROOT_IP = f"{NET}.2"
PASSWORD = "lab-secret"
TTL = 5

# Hearth's ports (in its own netns, address NET.10).
H_IP = f"{NET}.10"
H_C2S = 5222
H_S2S = 5279
H_S2S_TLS = 5280
DEAD_PORT = 5999


class LabError(Exception):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(args)}: rc={r.returncode}\n{r.stdout}{r.stderr}")
    return r


def missing_tools(with_ejabberd: bool = False) -> list[str]:
    tools = ["ip", "openssl", "dnsmasq", "prosody", "prosodyctl"]
    if with_ejabberd:
        tools.append("ejabberdctl")
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    # Prosody's fallback resolver reads /etc/resolv.conf only; the lab needs libunbound's
    # `forward` to reach the lab DNS.
    if not glob.glob("/usr/lib/*/lua/*/lunbound.so") and not glob.glob("/usr/lib/lua/*/lunbound.so"):
        missing.append("lua-unbound")
    return missing


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def netns_list() -> list[str]:
    r = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    r = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit()]


def remove_netns_etc(ns: str) -> None:
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
    try:
        os.rmdir("/etc/netns")  # only if no other namespace has files there
    except OSError:
        pass


def kill_netns(ns: str) -> None:
    """Every process in the namespace is ours: TERM, wait up to 5 s, then KILL; then delete."""
    for sig, rounds in ((15, 50), (9, 20)):
        pids = netns_pids(ns)
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        for _ in range(rounds):
            if not netns_pids(ns):
                break
            time.sleep(0.1)
    sh("ip", "netns", "del", ns, check=False)
    remove_netns_etc(ns)


def wait_tcp(ip: str, port: int, secs: float, alive=None) -> bool:
    """True once something accepts on ip:port (from the root netns, over the lab bridge)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Node:
    """One server in its own netns."""

    def __init__(self, lab: "Lab", name: str, octet: int):
        self.lab = lab
        self.name = name
        self.ns = f"{PREFIX}-{name}"
        self.ip = f"{NET}.{octet}"
        self.dir = lab.dir / name
        self.dir.mkdir(mode=0o755)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "stdout.log"

    def spawn(self, argv: list[str], env: dict | None = None, cwd: pathlib.Path | None = None) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            cwd=cwd or self.dir, env=env, start_new_session=True)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exec(self, *argv: str, timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *argv, timeout=timeout, check=check, **kw)

    def stop(self) -> None:
        """Kills every process of this node (the netns stays, so the node can start again)."""
        for sig in (15, 9):
            pids = netns_pids(self.ns)
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            for _ in range(50):
                if not netns_pids(self.ns):
                    break
                time.sleep(0.1)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None


class Prosody(Node):
    """A Prosody from the distribution, configured only through its own config file."""

    def __init__(self, lab: "Lab", name: str, octet: int, hosts: dict[str, list[str]], *,
                 s2s_ports: list[int], s2s_tls_ports: list[int], trust_lab_ca: bool):
        super().__init__(lab, name, octet)
        self.hosts = hosts  # domain -> users
        self.s2s_ports = s2s_ports
        self.s2s_tls_ports = s2s_tls_ports
        self.trust_lab_ca = trust_lab_ca
        self.config = self.dir / "prosody.cfg.lua"
        self.prosody_log = self.dir / "prosody.log"
        self.domain = next(iter(hosts))

    def ip6_iface(self) -> str:
        return f'; "{NET6}{self.ip.rsplit(".", 1)[1]}"' if self.lab.ipv6 else ""

    def write_config(self) -> None:
        certs = self.lab.certs
        cafile = certs / "ca.crt" if self.trust_lab_ca else "/etc/ssl/certs/ca-certificates.crt"
        lines = [
            "run_as_root = true  -- the lab runs as root; Prosody refuses to otherwise",
            f'pidfile = "{self.dir}/prosody.pid"',
            f'data_path = "{self.dir}/data"',
            f'admin_socket = "{self.dir}/prosody.sock"',
            f'log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{self.prosody_log}" }} }}',
            f'interfaces = {{ "{self.ip}"{self.ip6_iface()} }}',
            'local_interfaces = { "127.0.0.1" }',
            "c2s_ports = { 5222 }",
            f"s2s_ports = {{ {', '.join(map(str, self.s2s_ports))} }}",
            f"s2s_direct_tls_ports = {{ {', '.join(map(str, self.s2s_tls_ports))} }}",
            "http_ports = { }",
            "https_ports = { }",
            'modules_enabled = { "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "vcard"; "version";'
            ' "pep"; "mam" }',
            'authentication = "internal_hashed"',
            'storage = "internal"',
            # Prosody finds DOMAIN.crt/DOMAIN.key here for every host and service (the
            # direct-TLS s2s port picks its certificate by SNI from this index).
            f'certificates = "{certs}"',
            f'ssl = {{ cafile = "{cafile}" }}',
            "allow_registration = false",
            "c2s_require_encryption = true",
            "s2s_require_encryption = true",
            "s2s_secure_auth = false",
            "s2s_timeout = 20",
            # libunbound (lua-unbound) would read the host's resolv.conf: point it at the lab DNS.
            # It also serves `.test` as a built-in always-NXDOMAIN zone (RFC 6761) without asking
            # anyone, unless told that the zone is transparent.
            f'unbound = {{ resolvconf = false; hoststxt = false; forward = "{DNS_IP}@53"; '
            'options = { ["local-zone:"] = "test. transparent" } }',
        ]
        for domain in self.hosts:
            lines += [
                f'VirtualHost "{domain}"',
                f'  ssl = {{ certificate = "{certs}/{domain}.crt"; key = "{certs}/{domain}.key"; cafile = "{cafile}" }}',
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        (self.dir / "data").mkdir(exist_ok=True)
        self.write_config()
        for domain, users in self.hosts.items():
            for user in users:
                self.exec("prosodyctl", "--config", str(self.config), "register", user, domain, PASSWORD)
        self.spawn(["prosody", "--config", str(self.config), "-F"])

    def restart(self) -> None:
        """Stops Prosody and starts it again on the same config and data."""
        self.stop()
        self.spawn(["prosody", "--config", str(self.config), "-F"])

    def wait(self, secs: float = 20) -> None:
        for port in [5222, *self.s2s_ports, *self.s2s_tls_ports]:
            if not wait_tcp(self.ip, port, secs, self.alive):
                raise LabError(f"prosody {self.name} not listening on {self.ip}:{port}\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        out = []
        for p in (self.log_path, self.prosody_log):
            try:
                out += p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out)


class Ejabberd(Node):
    """ejabberd from the distribution (an Erlang node named ejabberd@localhost in its netns)."""

    def __init__(self, lab: "Lab", name: str, octet: int, domain: str, users: list[str], s2s_port: int):
        super().__init__(lab, name, octet)
        self.domain = domain
        self.users = users
        self.s2s_port = s2s_port
        self.started_at = 0.0

    def ctl(self) -> list[str]:
        d = self.dir
        return [tool("ejabberdctl"), "--config-dir", str(d), "--config", str(d / "ejabberd.yml"),
                "--ctl-config", str(d / "ejabberdctl.cfg"), "--logs", str(d / "logs"), "--spool", str(d / "spool")]

    def start(self) -> None:
        d = self.dir
        (d / "logs").mkdir()
        (d / "spool").mkdir()
        shutil.copy(self.lab.certs / f"{self.domain}.pem", d / "cert.pem")
        (d / "ejabberdctl.cfg").write_text(f'EJABBERD_PID_PATH={d}/ejabberd.pid\nERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n')
        # ejabberd resolves SRV with Erlang's inet_res but the targets' addresses with the
        # libc (getaddrinfo): both read /etc/resolv.conf, so this node gets its own through
        # `ip netns exec`, which bind-mounts /etc/netns/NS/* over /etc/* (removed in down()).
        etc = pathlib.Path("/etc/netns") / self.ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions timeout:2 attempts:2\n")
        (d / "inetrc").write_text('{lookup, [file, native]}.\n{file, resolv, "/etc/resolv.conf"}.\n')
        (d / "ejabberd.yml").write_text(self._yml())
        sh("chown", "-R", "ejabberd:ejabberd", str(d))
        self.started_at = time.monotonic()
        self.spawn([*self.ctl(), "foreground"])

    def _yml(self) -> str:
        d = self.dir
        return f"""\
loglevel: info
log_rotate_count: 0
hosts: ["{self.domain}"]
certfiles: ["{d}/cert.pem"]
ca_file: "/etc/ssl/certs/ca-certificates.crt"
listen:
  - {{port: 5222, ip: "{self.ip}", module: ejabberd_c2s, starttls_required: true}}
  - {{port: {self.s2s_port}, ip: "{self.ip}", module: ejabberd_s2s_in}}
s2s_use_starttls: required
s2s_dns_timeout: 5
s2s_dns_retries: 1
# default 300 s: after one failed attempt ejabberd bounces stanzas for minutes
s2s_max_retry_delay: 1
outgoing_s2s_families: [ipv4]
auth_method: internal
auth_password_format: scram
shaper_rules: {{}}
acl:
  local: {{user_regexp: ""}}
access_rules:
  local: {{allow: local}}
  c2s: {{allow: all}}
  s2s: {{allow: all}}
s2s_access: s2s
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
  mod_vcard: {{}}
  mod_version: {{}}
"""

    def wait(self, secs: float) -> float:
        """Waits until ejabberd listens and has its accounts; returns its start time in seconds."""
        if not wait_tcp(self.ip, self.s2s_port, secs, self.alive) or not wait_tcp(self.ip, 5222, 5, self.alive):
            raise LabError(f"ejabberd not listening within {secs}s\n{self.tail()}")
        for user in self.users:
            self.exec(*self.ctl(), "register", user, self.domain, PASSWORD, timeout=30)
        return time.monotonic() - self.started_at

    def tail(self, n: int = 40) -> str:
        out = []
        for p in (self.log_path, self.dir / "logs" / "ejabberd.log", self.dir / "logs" / "error.log"):
            try:
                out += p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out)


class Hearth(Node):
    """The server under test, from $HEARTH_BIN, with a generated config."""

    def __init__(self, lab: "Lab", binary: str, users: dict[str, list[str]]):
        super().__init__(lab, "h", 10)
        self.binary = binary
        self.users = users  # domain -> users
        self.config = self.dir / "hearth.toml"
        self.log_path = self.dir / "hearth.log"

    def write_config(self) -> None:
        certs = self.lab.certs
        entries = ", ".join(
            f'{{ domain = "{d}", cert = "{certs}/{d}.crt", key = "{certs}/{d}.key" }}' for d in self.users)
        self.config.write_text(
            f"domains = [{', '.join(repr(d).replace(chr(39), chr(34)) for d in self.users)}]\n"
            'data_dir = "data"\n'
            'log_level = "debug"\n\n'
            "[tls]\n"
            f"certs = [{entries}]\n\n"
            "[c2s]\n"
            f'listen = ["{self.ip}:{H_C2S}"]\n'
            "listen_tls = []\n\n"
            "[s2s]\n"
            "enabled = true\n"
            f'listen = ["{self.ip}:{H_S2S}"]\n'
            f'listen_tls = ["{self.ip}:{H_S2S_TLS}"]\n'
            "require_encryption = true\n"
            f'ca_file = "{certs}/ca.crt"\n\n'
            "[dns]\n"
            f'nameservers = ["{DNS_IP}:53"]\n')

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return sh(self.binary, "--config", str(self.config), *args, input=stdin, cwd=self.dir, check=False)

    def start(self) -> None:
        self.write_config()
        for domain, users in self.users.items():
            for user in users:
                r = self.cli("user", "add", f"{user}@{domain}", stdin=PASSWORD + "\n")
                if r.returncode != 0:
                    raise LabError(f"hearth user add {user}@{domain}: rc={r.returncode}\n{r.stdout}{r.stderr}")
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.spawn([self.binary, "--config", str(self.config), "serve"], env=env)

    def restart(self) -> None:
        """Stops Hearth and starts it again on the same config and data (accounts kept)."""
        self.stop()
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.spawn([self.binary, "--config", str(self.config), "serve"], env=env)

    def wait(self, secs: float = 10) -> None:
        for port in (H_C2S, H_S2S, H_S2S_TLS):
            if not wait_tcp(self.ip, port, secs, self.alive):
                raise LabError(f"hearth not listening on {self.ip}:{port} within {secs}s\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Lab:
    """Namespaces + DNS + certificates; servers are added with add_* and started by the caller."""

    LOCK = pathlib.Path(os.environ.get("HEARTH_FEDLAB_LOCK", f"/tmp/{PREFIX}-lab.lock"))

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{PREFIX}-lab-"))
        # ejabberd runs as its own user and must reach its folder inside this one.
        self.dir.chmod(0o755)
        self.certs = self.dir / "certs"
        self.nodes: dict[str, Node] = {}
        self.hub = f"{PREFIX}-hub"
        self.dns_proc: subprocess.Popen | None = None
        self.lock_fd: int | None = None
        self.ipv6 = False

    # ------------------------------------------------------------------ lifecycle

    def acquire(self, secs: float = 600) -> None:
        """One lab per machine at a time (same names, same subnet): wait for a running one."""
        self.lock_fd = os.open(self.LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        deadline = time.monotonic() + secs
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another federation lab holds {self.LOCK} for more than {secs}s")
                time.sleep(1)

    def remove_stale(self) -> None:
        for ns in netns_list():
            if ns.startswith(f"{PREFIX}-"):
                kill_netns(ns)
        sh("ip", "link", "del", f"{PREFIX}-root", check=False)

    def up_net(self, names: list[tuple[str, int]]) -> None:
        r = sh("ip", "-4", "route", "show", f"{NET}.0/24")
        if r.stdout.strip():
            raise LabError(f"{NET}.0/24 is already routed here ({r.stdout.strip()}): set HEARTH_FEDLAB_NET")
        hub = self.hub
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "set", "lo", "up")
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "addr", "add", f"{NET}.1/24", "dev", "br0")
        sh("ip", "-n", hub, "addr", "add", f"{DNS_IP}/24", "dev", "br0")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        # the test process's own leg on the bridge
        sh("ip", "link", "add", f"{PREFIX}-root", "type", "veth", "peer", "name", "vroot", "netns", hub)
        sh("ip", "-n", hub, "link", "set", "vroot", "master", "br0", "up")
        sh("ip", "addr", "add", f"{ROOT_IP}/24", "dev", f"{PREFIX}-root")
        sh("ip", "link", "set", f"{PREFIX}-root", "up")
        for name, octet in names:
            ns = f"{PREFIX}-{name}"
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", hub, "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", hub, "link", "set", f"v{name}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{NET}.{octet}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        # IPv6 too where the kernel has it (an AAAA-only peer); without it that test skips.
        self.ipv6 = True
        for name, octet in names:
            r = sh("ip", "-n", f"{PREFIX}-{name}", "addr", "add", f"{NET6}{octet}/64", "dev", "eth0", "nodad",
                   check=False)
            self.ipv6 = self.ipv6 and r.returncode == 0

    def make_certs(self, domains: dict[str, bool]) -> None:
        """Lab CA and one certificate per domain (SAN domain and *.domain); the bool says
        whether the certificate carries clientAuth besides serverAuth (Let's Encrypt's new
        profile has serverAuth only)."""
        c = self.certs
        c.mkdir(mode=0o755)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        sh("openssl", "req", "-x509", *ec, "-days", "30", "-subj", "/CN=Hearth federation lab CA",
           "-keyout", str(c / "ca.key"), "-out", str(c / "ca.crt"))
        for d, client_auth in domains.items():
            sh("openssl", "req", *ec, "-subj", f"/CN={d}", "-keyout", str(c / f"{d}.key"), "-out", str(c / f"{d}.csr"))
            eku = "serverAuth,clientAuth" if client_auth else "serverAuth"
            (c / f"{d}.ext").write_text(
                f"subjectAltName=DNS:{d},DNS:*.{d}\nextendedKeyUsage={eku}\nbasicConstraints=CA:FALSE\n")
            sh("openssl", "x509", "-req", "-in", str(c / f"{d}.csr"), "-CA", str(c / "ca.crt"),
               "-CAkey", str(c / "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", str(c / f"{d}.ext"),
               "-out", str(c / f"{d}.crt"))
            (c / f"{d}.pem").write_text((c / f"{d}.crt").read_text() + (c / f"{d}.key").read_text())
            for suffix in ("key", "pem"):
                (c / f"{d}.{suffix}").chmod(0o644)  # servers run as root or ejabberd; a throw-away lab

    def start_dns(self, records: list[str]) -> None:
        conf = self.dir / "dnsmasq.conf"
        conf.write_text("\n".join([
            "no-resolv", "no-hosts", "no-poll", "local=/test/", f"local-ttl={TTL}",
            "log-queries=extra", *records]) + "\n")
        log = open(self.dir / "dnsmasq.out", "ab")
        self.dns_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.hub, tool("dnsmasq"), "--keep-in-foreground", f"--conf-file={conf}",
             f"--listen-address={DNS_IP}", "--bind-interfaces", "--port=53", "--user=root", "--group=root",
             f"--pid-file={self.dir}/dnsmasq.pid", f"--log-facility={self.dir}/dnsmasq.log"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dns_proc.poll() is not None:
                raise LabError(f"dnsmasq died: {(self.dir / 'dnsmasq.out').read_text()}")
            if self.dns_query("a.test", 1) is not None:
                return
            time.sleep(0.1)
        raise LabError("dnsmasq did not answer within 10 s")

    def dns_query(self, name: str, qtype: int) -> int | None:
        """RCODE of a UDP query to the lab DNS from the root netns, None on timeout."""
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
        q += qtype.to_bytes(2, "big") + b"\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(q, (DNS_IP, 53))
                r = s.recv(4096)
            except OSError:
                return None
        return r[3] & 0x0F if len(r) >= 4 and r[:2] == b"\x12\x34" else None

    def down(self) -> None:
        for n in self.nodes.values():
            try:
                n.stop()
            except Exception:
                pass
        for ns in netns_list():
            if ns.startswith(f"{PREFIX}-"):
                kill_netns(ns)
        if self.dns_proc is not None:
            try:
                self.dns_proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        sh("ip", "link", "del", f"{PREFIX}-root", check=False)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def records() -> list[str]:
    """dnsmasq lines for the zone described in the module doc."""
    a, d, e = f"{NET}.11", f"{NET}.14", f"{NET}.15"
    r = [
        f"host-record=h.test,{H_IP}", f"host-record=xmpp.h.test,{H_IP}", f"host-record=h2.test,{H_IP}",
        f"srv-host=_xmpp-server._tcp.h.test,xmpp.h.test,{H_S2S},0,5",
        f"srv-host=_xmpps-server._tcp.h2.test,xmpp.h.test,{H_S2S_TLS},0,5",
        f"host-record=a.test,{a}", f"host-record=xmpp.a.test,{a}",
        "srv-host=_xmpp-server._tcp.a.test,xmpp.a.test,5299,0,5",
        f"host-record=burst.test,{a}",
        "srv-host=_xmpp-server._tcp.burst.test,xmpp.a.test,5299,0,5",
        f"host-record=fo.test,{a}",
        f"srv-host=_xmpp-server._tcp.fo.test,xmpp.a.test,{DEAD_PORT},0,5",
        "srv-host=_xmpp-server._tcp.fo.test,xmpp.a.test,5299,10,5",
        "cname=alias.cn.test,xmpp.a.test",
        # v6.test: its SRV target has an AAAA record only (Prosody a's IPv6 address)
        f"host-record=xmpp6.a.test,{NET6}11", f"host-record=v6.test,{NET6}11",
        "srv-host=_xmpp-server._tcp.v6.test,xmpp6.a.test,5299,0,5",
        "srv-host=_xmpp-server._tcp.cn.test,alias.cn.test,5299,0,5",
        f"host-record=d.test,{d}", f"host-record=xmpp.d.test,{d}",
        "srv-host=_xmpps-server._tcp.d.test,xmpp.d.test,5399,0,5",
        f"host-record=e.test,{e}", f"host-record=xmpp.e.test,{e}",
        "srv-host=_xmpp-server._tcp.e.test,xmpp.e.test,5289,0,5",
        # the only target is dead (closed port): connecting fails, queued stanzas bounce
        f"srv-host=_xmpp-server._tcp.dead.test,xmpp.a.test,{DEAD_PORT},0,5",
        # no port, no target: dnsmasq publishes the "." target (RFC 2782: service not available)
        "srv-host=_xmpp-server._tcp.dot.test",
    ]
    return r
