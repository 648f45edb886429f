#!/usr/bin/env python3
"""Turns scripts/bench's results (JSON lines) into one table: a row per figure, a column per
server, and Hearth's ratio to each other server. With several runs, each cell is the median of
the runs (a yes/no cell is "yes" only if every run said yes)."""
import argparse
import datetime
import json
import os
import platform
import statistics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--servers", required=True)
    ap.add_argument("--ns", required=True)
    ap.add_argument("--hearth-size", type=int)
    ap.add_argument("--accounts", type=int)
    ap.add_argument("--versions", default="")
    ap.add_argument("--cmd", default="scripts/bench")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args()
    servers = [s for s in a.servers.split(",") if s]
    ns = sorted(int(n) for n in a.ns.split(","))

    # rec[s][run][key] = value; runs[s][run] = [loadgen JSON results]
    rec = {s: {} for s in servers}
    runs = {s: {} for s in servers}
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
            n = d.get("run", 1)
            rr = rec[s].setdefault(n, {})
            if d.get("key") == "crashed":
                rr["crashed"] = rr.get("crashed", False) or d["value"] is True
            elif "key" in d:
                rr[d["key"]] = d["value"]
            elif "json" in d:
                runs[s].setdefault(n, []).append(d["json"])
    run_ids = sorted({n for s in servers for n in list(rec[s]) + list(runs[s]) if n > 0}) or [1]

    def find(s, n, scenario, label=None, **kw):
        for r in runs[s].get(n, []):
            if r.get("scenario") != scenario or (label is not None and r.get("label") != label):
                continue
            if all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    rows = []  # (title, {server: value}, unit, better: "low"|"high"|None)

    per_run = {}  # title -> {server: [value per run]}, for the spread under the table

    def row(title, fn, unit, better, ids=None):
        """fn(s, n) gives the figure of server s in run n; the cell is the median over runs."""
        vals = {}
        for s in servers:
            got = []
            for n in ids or run_ids:
                try:
                    v = fn(s, n)
                except (TypeError, KeyError, ZeroDivisionError):
                    v = None
                if v is not None:
                    got.append(v)
            if not got:
                vals[s] = None
            elif all(isinstance(v, bool) for v in got):
                vals[s] = all(got) and len(got) == len(ids or run_ids)
            else:
                vals[s] = statistics.median(got)
            per_run.setdefault(title, {})[s] = got
        rows.append((title, vals, unit, better))

    R = lambda s, n: rec[s].get(n, {})
    row("server stayed up", lambda s, n: not R(s, n).get("crashed", False) if n in rec[s] else None, "", None)
    mib = lambda k: (k or 0) / 1024 if k else None
    row("idle RSS", lambda s, n: mib(R(s, n).get("idle_rss_kib")), "MiB", "low")
    for k in ns:
        row(f"RSS with {k:,} TLS sessions", lambda s, n, k=k: mib(find(s, n, "logins", "sessions", sessions=k)["settled_rss_kib"]), "MiB", "low")
        row(f"  per session at {k:,}", lambda s, n, k=k: (find(s, n, "logins", "sessions", sessions=k)["settled_rss_kib"] - R(s, n)["idle_rss_kib"]) / k, "KiB", "low")
    row("peak RSS (VmHWM, whole run)", lambda s, n: mib(max(R(s, n).get("ramp_hwm_kib") or 0, R(s, n).get("final_hwm_kib") or 0)), "MiB", "low")
    row("logins/s (full TLS handshake + SCRAM, client PBKDF2 cached)", lambda s, n: find(s, n, "logins", "rate")["logins_per_s"], "/s", "high")
    row(f"logins/s ramp to {ns[-1]:,} (client PBKDF2 not cached)", lambda s, n: find(s, n, "logins", "sessions", sessions=ns[-1])["logins_per_s"], "/s", "high")
    row("  login time p99 (rate run)", lambda s, n: find(s, n, "logins", "rate")["login_ms_p99"], "ms", "low")
    row("messages/s over TLS (4 pairs, window 1000)", lambda s, n: find(s, n, "messages", "max")["msgs_per_s"], "/s", "high")
    row("  all delivered", lambda s, n: find(s, n, "messages", "max")["delivered_all"], "", None)
    row("  server CPU per message", lambda s, n: 1e6 * find(s, n, "messages", "max")["server_cpu_s"] / max(1, find(s, n, "messages", "max")["received"]), "µs", "low")
    half = None
    for s in servers:
        for n in run_ids:
            r = find(s, n, "messages", "half")
            if r and half is None:
                half = r["rate"]
    hr = f" at {half:,.0f} msg/s" if half else " at half rate"
    H = lambda s, n: find(s, n, "messages", "half")
    row(f"latency p50{hr}", lambda s, n: H(s, n)["lat_us_p50"] / 1000, "ms", "low")
    row(f"latency p99{hr}", lambda s, n: H(s, n)["lat_us_p99"] / 1000, "ms", "low")
    row("  p99 counted from the due time (generator delays included)", lambda s, n: H(s, n)["lat_due_us_p99"] / 1000, "ms", "low")
    row("  generator send lag p99", lambda s, n: H(s, n)["lag_us_p99"] / 1000, "ms", None)
    row("  server waiting for a CPU in that test", lambda s, n: 100 * H(s, n)["server_runq_wait_s"] / H(s, n)["wall_s"], "%", None)
    row("  rate achieved in that test", lambda s, n: H(s, n)["msgs_per_s"], "/s", "high")
    row("  delivered all at that rate", lambda s, n: H(s, n)["delivered_all"], "", None)
    row("ping-pong round trip p50", lambda s, n: find(s, n, "pingpong")["lat_us_p50"] / 1000, "ms", "low")
    row("ping-pong round trip p99", lambda s, n: find(s, n, "pingpong")["lat_us_p99"] / 1000, "ms", "low")
    row("ping-pong round trips/s", lambda s, n: find(s, n, "pingpong")["roundtrips_per_s"], "/s", "high")
    row(f"start to listening, {a.accounts:,} accounts", lambda s, n: float(R(s, n)["start_s"]), "s", "low")
    row(f"creating {a.accounts:,} accounts (once)", lambda s, n: float(R(s, n)["accounts_s"]), "s", None, ids=[0])
    row("server CPU, one run", lambda s, n: float(R(s, n)["cpu_total_s"]) + float(R(s, n).get("ramp_cpu_s") or 0), "s", None)
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
        for n in run_ids:
            parts = []
            for r in runs[s].get(n, []):
                if "loadgen_cpu_pct" in r and r.get("scenario") != "register":
                    parts.append(f"{r['scenario']}{'/' + r['label'] if r.get('label') else ''} {r['loadgen_cpu_pct']}%")
            if parts:
                lg.append(f"- {s} run {n} (load average {R(s, n).get('loadavg', '?')} at its start): " + ", ".join(parts))
    # The spread of the runs behind the medians, for the figures that move with machine noise.
    spread = []
    for title, _, unit, _ in rows:
        if not any(w in title for w in ("messages/s", "logins/s", "latency p", "ping-pong", "per session at", "idle RSS", "start to")):
            continue
        cells = []
        for s in servers:
            got = per_run.get(title, {}).get(s) or []
            if got and not isinstance(got[0], bool):
                cells.append(f"{s} " + " / ".join(fmt(v) for v in got))
        if cells:
            spread.append(f"- {title.strip()} ({unit}): " + "; ".join(cells))
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
        f"Versions: {a.versions}. Command: `{a.cmd}`. "
        + (f"Each cell is the median of {len(run_ids)} runs." if len(run_ids) > 1 else "One run."),
        "",
        *lines,
        "",
        "Every run's value (run 1 / run 2 / ...):",
        *spread,
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
