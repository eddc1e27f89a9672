#!/usr/bin/env python3
"""The Markdown report of bench/replication.sh, from its work directory.

    report.py WORK --duration S --rate R --back S --settle S --db-bytes N --machine FILE

WORK/rounds/KIND.json (writer.py pool of the latency rounds, KIND baseline, litestream,
ours); per replicator WORK/NAME/: writer.json, times.json,
replicator.{cpu,hwm}, counts.jsonl (the proxy's), restore-*.{s,cpu,rss,failed},
check-latest.json, check-at.json, source.json. A replicator without a directory gets "—".
"""
import argparse
import json
import os

NAMES = {"litestream": "Litestream 0.5.17", "ours": "ours"}


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_num(path):
    try:
        with open(path) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def counts(run_dir):
    lines = []
    try:
        with open(os.path.join(run_dir, "counts.jsonl")) as f:
            for line in f:
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return lines


def mark(lines, name):
    for c in lines:
        if c.get("mark") == name:
            return c
    return None


def up(c):
    return c["total"]["req_head_bytes"] + c["total"]["req_body_bytes"]


def down(c):
    return c["total"]["resp_head_bytes"] + c["total"]["resp_body_bytes"]


def diff(a, b):
    """b − a, per op and in total (a may be None: zero)."""
    out = {"ops": {}, "total": {}}
    for k, v in b["total"].items():
        out["total"][k] = v - (a["total"][k] if a else 0)
    for op, v in b["ops"].items():
        base = (a or {"ops": {}})["ops"].get(op, {})
        out["ops"][op] = {k: v[k] - base.get(k, 0) for k in v if k != "statuses"}
    return out


def idle_cpu(d, seconds):
    """The replicator's CPU over the idle phase, as % of one core."""
    start, end = read_num(os.path.join(d, "idle-start.cpu")), read_num(os.path.join(d, "idle-end.cpu"))
    if start is None or end is None:
        return None
    return (end - start) * 100 / seconds


def run(work, name, a):
    d = os.path.join(work, name)
    if not os.path.isdir(d):
        return None
    r = {"writer": load(os.path.join(d, "writer.json"), {}), "times": load(os.path.join(d, "times.json"), {}),
         "cpu": read_num(os.path.join(d, "replicator.cpu")), "hwm_kib": read_num(os.path.join(d, "replicator.hwm")),
         "idle_cpu": idle_cpu(d, a.idle),
         "latest": load(os.path.join(d, "check-latest.json"), {}), "at": load(os.path.join(d, "check-at.json"), {}),
         "source": load(os.path.join(d, "source.json"), {}),
         "objects": load(os.path.join(d, "objects.json"))}
    for t in ("restore-latest", "restore-latest-checked", "restore-at"):
        base = os.path.join(d, t)
        if os.path.exists(base + ".failed") or not os.path.exists(base + ".s"):
            r[t] = None if not os.path.exists(base + ".failed") else "failed"
        else:
            r[t] = {"s": read_num(base + ".s"), "cpu": read_num(base + ".cpu"), "rss_kib": read_num(base + ".rss")}
    lines = counts(d)
    kill = mark(lines, "kill")
    tm = r["times"]
    if kill and tm:
        window = tm["kill"] - tm["replicator_start"]
        r["run"] = diff(None, kill)
        r["window"] = window
        r["per_hour"] = {"requests": kill["total"]["requests"] * 3600 / window,
                         "up": up(kill) * 3600 / window, "down": down(kill) * 3600 / window}
        # Steady state: from the periodic line nearest before the writer's halfway point to
        # the kill (the replicator's first copy of the database is behind it).
        half = tm["kill"] - (tm["kill"] - tm["writer_start"]) / 2
        before = [c for c in lines if c["time"] <= half and c.get("mark") in (None, "start")]
        if before:
            b = before[-1]
            span = kill["time"] - b["time"]
            st = diff(b, kill)
            r["steady"] = {"span": span, "requests": st["total"]["requests"] * 3600 / span,
                           "up": (st["total"]["req_head_bytes"] + st["total"]["req_body_bytes"]) * 3600 / span,
                           "down": (st["total"]["resp_head_bytes"] + st["total"]["resp_body_bytes"]) * 3600 / span}
        # A replicator's NAME_restore_latest may run more than one restore: "restore-latest"
        # marks the end of the first (the timed one), "restore-latest-done" of them all.
        done = mark(lines, "restore-latest-done")
        rl = mark(lines, "restore-latest") or done
        ra = mark(lines, "restore-at")
        if rl:
            r["restore_latest_io"] = diff(kill, rl)
        if done and ra:
            r["restore_at_io"] = diff(done, ra)
    return r


def fmt(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 100 and nd <= 1:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{nd}f}"


def mib(v):
    return None if v is None else v / 1048576


def get(r, *path):
    for p in path:
        if r is None:
            return None
        if isinstance(r, dict):
            r = r.get(p)
        else:
            return None
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--back", type=float, required=True)
    ap.add_argument("--settle", type=float, required=True)
    ap.add_argument("--idle", type=float, required=True)
    ap.add_argument("--idle-states", choices=("held", "on"), required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--round", type=float, required=True)
    ap.add_argument("--db-bytes", type=int, required=True)
    ap.add_argument("--machine", required=True)
    a = ap.parse_args()
    pooled = {k: load(os.path.join(a.work, "rounds", f"{k}.json")) for k in ("baseline", "litestream", "ours")}
    base = pooled["baseline"] or {}
    base_json = load(os.path.join(a.work, "base.json"), {})
    L = run(a.work, "litestream", a)
    O = run(a.work, "ours", a)

    out = []
    p = out.append
    p(f"# Continuous SQLite replication: ours beside Litestream 0.5.17")
    p("")
    with open(a.machine) as f:
        p(f.read().rstrip())
    p(f"- Database: {a.db_bytes / 1048576:.1f} MiB ({base_json.get('filler_rows', '?')} rows of 1 KiB random bytes, "
      f"WAL mode), a fresh copy per run. App: {a.rate:g} transactions a second on a fixed timetable "
      f"(`BEGIN IMMEDIATE`, one row: id = seq, time, 1 KiB random; `COMMIT`), `synchronous=NORMAL`, "
      f"`busy_timeout` 5000 ms, for {a.duration:g} s. The replicator starts {a.settle + a.idle:g} s before the app "
      f"(its CPU is read {a.settle:g} s in and {a.idle:g} s later, the database untouched: the idle cost); "
      f"after {a.duration:g} s of writing one `kill -KILL` ends both. Each replicator talks to its own "
      f"fresh counting proxy in front of the same moto; restores go through it too. The app's latencies "
      f"come from {a.rounds} rounds after those runs: each runs the app for {a.round:g} s alone, beside "
      f"Litestream and beside ours (each replicating to its own "
      f"prefix, each after the same {a.settle:g} s pause), every order of the kinds in turn, and pools each kind's commits — one stretch per kind "
      f"would compare what the shared host did in those minutes. CPU idle states: "
      + ("held off for every run, the baseline too (`/dev/cpu_dma_latency` = 0): commit latencies "
         "compare what the replicators do, not how often they wake the CPUs"
         if a.idle_states == "held" else "as the machine has them (`--idle-states on`)") + ".")
    p("")

    def ratio(o, l):
        if o is None or l is None or isinstance(o, str) or isinstance(l, str):
            return "—"
        if l == 0:
            return "—" if o == 0 else "∞"
        return f"{o / l:.2f}×"

    def verdict(ok):
        return "—" if ok is None else ("met" if ok else "**MISSED**")

    def le(o, l, factor=1.0):
        if o is None or l is None or isinstance(o, str) or isinstance(l, str):
            return None
        return o <= l * factor

    rows = []

    def row(label, lv, ov, nd=1, goal="≤ 1.0×", ok="ratio"):
        if ok == "ratio":
            ok = le(ov, lv)
        rows.append(f"| {label} | {fmt(lv, nd)} | {fmt(ov, nd)} | {ratio(ov, lv)} | {goal} | {verdict(ok)} |")

    lost = lambda r: get(r, "latest", "lost")
    row("transactions lost after SIGKILL (last acknowledged seq − newest restored)", lost(L), lost(O), 0,
        "≤ Litestream's", le(lost(O), lost(L)))
    beyond = lambda r: get(r, "latest", "beyond")
    row("restored rows beyond the last acknowledged commit (≤ 1: the one in flight)", beyond(L), beyond(O), 0, "≤ 1",
        None if beyond(O) is None else beyond(O) <= 1)
    row("S3 requests per hour (whole run)", get(L, "per_hour", "requests"), get(O, "per_hour", "requests"))
    row("S3 MiB sent per hour (whole run)", mib(get(L, "per_hour", "up")), mib(get(O, "per_hour", "up")))
    row("S3 MiB received per hour (whole run)", mib(get(L, "per_hour", "down")), mib(get(O, "per_hour", "down")))
    row("S3 requests per hour (steady: second half)", get(L, "steady", "requests"), get(O, "steady", "requests"))
    row("S3 MiB sent per hour (steady)", mib(get(L, "steady", "up")), mib(get(O, "steady", "up")))
    row("S3 MiB received per hour (steady)", mib(get(L, "steady", "down")), mib(get(O, "steady", "down")))
    nobj = lambda r: None if get(r, "objects") is None else len(r["objects"])
    stored = lambda r: None if get(r, "objects") is None else sum(o["size"] for o in r["objects"]) / 1048576
    row("objects in the bucket at the end", nobj(L), nobj(O), 0, "—", None)
    row("MiB stored in the bucket at the end", stored(L), stored(O), 1, "—", None)
    row(f"replicator CPU s (user + sys, over the run)", get(L, "cpu"), get(O, "cpu"), 2)
    row(f"replicator CPU while the database is idle, % of one core ({a.idle:g} s)", get(L, "idle_cpu"),
        get(O, "idle_cpu"), 2)
    row("replicator peak RSS MiB (VmHWM)", None if get(L, "hwm_kib") is None else L["hwm_kib"] / 1024,
        None if get(O, "hwm_kib") is None else O["hwm_kib"] / 1024)
    bp99 = get(base, "commit_ms", "p99")
    PL, PO = pooled["litestream"], pooled["ours"]
    rounds_of = f"{a.rounds} interleaved rounds × {a.round:g} s, pooled"
    for key, what in (("commit_ms", "app COMMIT"), ("txn_ms", "app transaction (BEGIN IMMEDIATE…COMMIT)")):
        row(f"{what} p50 ms ({rounds_of})", get(PL, key, "p50"), get(PO, key, "p50"), 3, "—", None)
        row(f"{what} p99 ms ({rounds_of})", get(PL, key, "p99"), get(PO, key, "p99"), 3)
    op99 = get(PO, "commit_ms", "p99")
    lp99 = get(PL, "commit_ms", "p99")
    rows.append(f"| app COMMIT p99 with the replicator ÷ without ({fmt(bp99, 3)} ms, the same rounds) | "
                f"{ratio(lp99, bp99)} | {ratio(op99, bp99)} | — | ours ≤ 1.2× | {verdict(le(op99, bp99, 1.2))} |")
    for key, what in (("commit_ms", "app COMMIT"), ("txn_ms", "app transaction")):
        row(f"{what} p99 ms during the long run (one {a.duration:g} s stretch each)",
            get(L, "writer", key, "p99"), get(O, "writer", key, "p99"), 3, "—", None)
    row("app transactions late > 100 ms", get(L, "writer", "late_over_100ms"), get(O, "writer", "late_over_100ms"), 0, "—", None)
    t = lambda r, k: (get(r, k) if isinstance(get(r, k), str) else get(r, k, "s"))
    row("restore of the latest state, wall s", t(L, "restore-latest"), t(O, "restore-latest"), 2)
    rows.append(f"| … Litestream with `-integrity-check full` (ours always checks) | {fmt(t(L, 'restore-latest-checked'), 2)} | "
                f"— | {ratio(t(O, 'restore-latest'), t(L, 'restore-latest-checked'))} | — | — |")
    row("restore of the latest state, peak RSS MiB", None if not isinstance(get(L, "restore-latest"), dict) else L["restore-latest"]["rss_kib"] / 1024,
        None if not isinstance(get(O, "restore-latest"), dict) else O["restore-latest"]["rss_kib"] / 1024)
    integ = lambda r, k: get(r, k, "integrity") or get(r, k, "error")
    rows.append(f"| restored latest: `integrity_check`, rows contiguous 1…max | {integ(L, 'latest') or '—'}, {get(L, 'latest', 'contiguous')} | "
                f"{integ(O, 'latest') or '—'}, {get(O, 'latest', 'contiguous')} | — | ok, True | "
                f"{verdict(None if O is None else (integ(O, 'latest') == 'ok' and get(O, 'latest', 'contiguous') is True))} |")
    row(f"restore to {a.back:g} s before the kill, wall s", t(L, "restore-at"), t(O, "restore-at"), 2)
    at_cell = lambda r: "—" if get(r, "at", "rows") is None else (
        f"{r['at']['rows']} of {r['at']['committed_at']} (missing {r['at']['missing_at']}, newer {r['at']['after_at']})")
    rows.append(f"| … rows restored of those committed by then | {at_cell(L)} | {at_cell(O)} | — | newer 0 | "
                f"{verdict(None if get(O, 'at', 'after_at') is None else O['at']['after_at'] == 0)} |")
    rows.append(f"| … `integrity_check` | {integ(L, 'at') or '—'} | {integ(O, 'at') or '—'} | — | ok | "
                f"{verdict(None if O is None else integ(O, 'at') == 'ok')} |")

    p("| Measure | Litestream 0.5.17 | ours | ours ÷ Litestream | Goal | |")
    p("|---|--:|--:|--:|---|---|")
    out.extend(rows)
    p("")
    p(f"Baseline, the app alone over the same rounds ({fmt(get(base, 'transactions'), 0)} transactions): "
      f"COMMIT p50 {fmt(get(base, 'commit_ms', 'p50'), 3)} ms, "
      f"p99 {fmt(bp99, 3)} ms, p99.9 {fmt(get(base, 'commit_ms', 'p999'), 3)} ms, max {fmt(get(base, 'commit_ms', 'max'), 3)} ms; "
      f"whole transaction p50 {fmt(get(base, 'txn_ms', 'p50'), 3)} ms, p99 {fmt(get(base, 'txn_ms', 'p99'), 3)} ms, "
      f"max {fmt(get(base, 'txn_ms', 'max'), 3)} ms.")
    p("")
    per_round = lambda k: ", ".join(fmt(r["commit_p99"], 3) for r in (pooled[k] or {}).get("rounds", [])) or "—"
    p(f"Each round's COMMIT p99 ms, in round order (the kinds' order rotates by one each round, backwards every other cycle): "
      f"alone {per_round('baseline')}; Litestream {per_round('litestream')}; ours {per_round('ours')}.")
    p("")
    for name, r in (("litestream", L), ("ours", O)):
        if r is None or "run" not in r:
            continue
        w = r["writer"]
        p(f"**{NAMES[name]}**: replicator up {r['window']:.1f} s; the app committed {w.get('transactions')} "
          f"({w.get('rate_achieved')} a second), last acknowledged seq {get(r, 'latest', 'last_seq')}, "
          f"the app's own file holds {get(r, 'source', 'max_seq')} after the kill; "
          f"COMMIT p99.9 {fmt(get(w, 'commit_ms', 'p999'), 3)} ms, max {fmt(get(w, 'commit_ms', 'max'), 3)} ms, "
          f"transaction max {fmt(get(w, 'txn_ms', 'max'), 3)} ms. "
          f"Requests by kind over the run (requests, KiB sent, KiB received):")
        p("")
        p("| kind | run | restore latest | restore to a time |")
        p("|---|--:|--:|--:|")
        kinds = sorted(set(r["run"]["ops"]) | set(get(r, "restore_latest_io", "ops") or {}) | set(get(r, "restore_at_io", "ops") or {}))
        def cell(io, k):
            o = (io or {}).get("ops", {}).get(k)
            if not o or not o.get("requests"):
                return "—"
            kib = lambda b: f"{b / 1024:,.0f}".replace(",", " ")
            return (f"{o['requests']}, {kib(o['req_head_bytes'] + o['req_body_bytes'])}, "
                    f"{kib(o['resp_head_bytes'] + o['resp_body_bytes'])}")
        for k in kinds:
            p(f"| {k} | {cell(r['run'], k)} | {cell(r.get('restore_latest_io'), k)} | {cell(r.get('restore_at_io'), k)} |")
        p("")
    p("Notes. Lost transactions count from the last COMMIT the app saw return (`last.json`, rewritten after "
      "each); the app's file itself is checked after the restores. Per hour = the counts at the kill × 3600 ÷ "
      "the replicator's time up, so a short run weighs the first copy of the database heavily; the steady rows "
      "take the proxy's counts from the writer's halfway point to the kill. Bytes include request and response "
      "headers. CPU and peak RSS are the replicator process's own (`/proc/PID/stat` utime + stime, `VmHWM`), read "
      "just before the kill. Restores are whole processes under GNU time, into a fresh file, from an empty local "
      "state (ours: an empty `backup_dir`); their checks (`integrity_check`, rows) run afterwards, untimed. The "
      "point-in-time restore asks for the whole second "
      f"{a.back:g} s before the kill; \"missing\" are transactions committed by then that the restore lacks (a "
      "replicator stamps a transaction when it ships it, up to one sync interval after its commit), \"newer\" "
      "rows committed after it (never allowed). moto and the proxy are Python on the same cores as the app "
      "and the replicator.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
