#!/usr/bin/env python3
"""Turns scripts/bench's results (JSON lines) into one table: a row per figure, a column per
server, and Hearth's ratio to each other server."""
import argparse
import datetime
import json
import os
import platform


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--servers", required=True)
    ap.add_argument("--ns", required=True)
    ap.add_argument("--hearth-size", type=int)
    ap.add_argument("--accounts", type=int)
    ap.add_argument("--versions", default="")
    ap.add_argument("--cmd", default="scripts/bench")
    ap.add_argument("--out")
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s]
    ns = sorted(int(n) for n in a.ns.split(","))

    rec = {s: {} for s in servers}
    runs = {s: [] for s in servers}
    with open(a.results) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            s = d.get("server")
            if s not in rec:
                continue
            if d.get("key") == "crashed":
                rec[s]["crashed"] = rec[s].get("crashed", False) or d["value"] is True
            elif "key" in d:
                rec[s][d["key"]] = d["value"]
            elif "json" in d:
                runs[s].append(d["json"])

    def find(s, scenario, label=None, **kw):
        for r in runs[s]:
            if r.get("scenario") != scenario or (label is not None and r.get("label") != label):
                continue
            if all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    rows = []  # (title, {server: value}, unit, better: "low"|"high"|None)

    def row(title, fn, unit, better):
        vals = {}
        for s in servers:
            try:
                vals[s] = fn(s)
            except (TypeError, KeyError, ZeroDivisionError):
                vals[s] = None
        rows.append((title, vals, unit, better))

    row("server stayed up", lambda s: not rec[s].get("crashed", False), "", None)
    mib = lambda k: (k or 0) / 1024 if k else None
    row("idle RSS", lambda s: mib(rec[s].get("idle_rss_kib")), "MiB", "low")
    for n in ns:
        row(f"RSS with {n:,} TLS sessions", lambda s, n=n: mib(find(s, "logins", "sessions", sessions=n)["settled_rss_kib"]), "MiB", "low")
        row(f"  per session at {n:,}", lambda s, n=n: (find(s, "logins", "sessions", sessions=n)["settled_rss_kib"] - rec[s]["idle_rss_kib"]) / n, "KiB", "low")
    row("peak RSS (VmHWM, whole run)", lambda s: mib(max(rec[s].get("ramp_hwm_kib") or 0, rec[s].get("final_hwm_kib") or 0)), "MiB", "low")
    row("logins/s (full TLS handshake + SCRAM, client PBKDF2 cached)", lambda s: find(s, "logins", "rate")["logins_per_s"], "/s", "high")
    row(f"logins/s ramp to {ns[-1]:,} (client PBKDF2 not cached)", lambda s: find(s, "logins", "sessions", sessions=ns[-1])["logins_per_s"], "/s", "high")
    row("  login time p99 (rate run)", lambda s: find(s, "logins", "rate")["login_ms_p99"], "ms", "low")
    row("messages/s over TLS (4 pairs, window 1000)", lambda s: find(s, "messages", "max")["msgs_per_s"], "/s", "high")
    row("  all delivered", lambda s: find(s, "messages", "max")["delivered_all"], "", None)
    row("  server CPU per message", lambda s: 1e6 * find(s, "messages", "max")["server_cpu_s"] / max(1, find(s, "messages", "max")["received"]), "µs", "low")
    half = None
    for s in servers:
        r = find(s, "messages", "half")
        if r:
            half = r["rate"]
            break
    hr = f" at {half:,.0f} msg/s" if half else " at half rate"
    row(f"latency p50{hr}", lambda s: find(s, "messages", "half")["lat_us_p50"] / 1000, "ms", "low")
    row(f"latency p99{hr}", lambda s: find(s, "messages", "half")["lat_us_p99"] / 1000, "ms", "low")
    row("  rate achieved in that test", lambda s: find(s, "messages", "half")["msgs_per_s"], "/s", "high")
    row("  delivered all at that rate", lambda s: find(s, "messages", "half")["delivered_all"], "", None)
    row("ping-pong round trip p50", lambda s: find(s, "pingpong")["lat_us_p50"] / 1000, "ms", "low")
    row("ping-pong round trip p99", lambda s: find(s, "pingpong")["lat_us_p99"] / 1000, "ms", "low")
    row("ping-pong round trips/s", lambda s: find(s, "pingpong")["roundtrips_per_s"], "/s", "high")
    row(f"start to listening, {a.accounts:,} accounts", lambda s: float(rec[s]["start_s"]), "s", "low")
    row(f"creating {a.accounts:,} accounts", lambda s: float(rec[s]["accounts_s"]), "s", None)
    row("server CPU, whole run", lambda s: float(rec[s]["cpu_total_s"]) + float(rec[s].get("ramp_cpu_s") or 0), "s", None)
    if a.hearth_size:
        rows.append(("binary size (release, stripped)", {"hearth": a.hearth_size / 1024 / 1024}, "MiB", None))

    def fmt(v):
        if v is None:
            return "–"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, str):
            return v
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"

    others = [s for s in servers if s != "hearth"]
    head = ["figure", "unit"] + servers + ([f"hearth/{o}" for o in others] if "hearth" in servers else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for title, vals, unit, better in rows:
        cells = [title, unit] + [fmt(vals.get(s)) for s in servers]
        if "hearth" in servers:
            for o in others:
                h, x = vals.get("hearth"), vals.get(o)
                if better and isinstance(h, (int, float)) and isinstance(x, (int, float)) and x and not isinstance(h, bool):
                    r = h / x
                    cells.append(f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×")
                else:
                    cells.append("")
        lines.append("| " + " | ".join(cells) + " |")

    # The generator's own CPU: it must not be the bottleneck.
    lg = []
    for s in servers:
        parts = []
        for r in runs[s]:
            if "loadgen_cpu_pct" in r and r.get("scenario") != "register":
                parts.append(f"{r['scenario']}{'/' + r['label'] if r.get('label') else ''} {r['loadgen_cpu_pct']}%")
        if parts:
            lg.append(f"- {s}: " + ", ".join(parts))
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    cpu = l.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = "\n".join([
        f"Measured {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {platform.node() or '?'}: "
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, loopback only.",
        f"Versions: {a.versions}. Command: `{a.cmd}`.",
        "",
        *lines,
        "",
        "Load generator CPU (% of one core over each run's wall time; 100% per busy thread):",
        *lg,
    ])
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
