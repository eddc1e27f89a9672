#!/usr/bin/env python3
"""The app of bench/replication.sh: SQLite in WAL mode, a fixed commit rate.

    writer.py populate DB --mib 50 [--seed 42]
        a fresh database: table filler (1 KiB random rows) of about --mib MiB, table tx
        (empty), WAL mode, checkpointed and closed (no -wal file left).
    writer.py run DB --out DIR --rate 50 --duration 600
        commits --rate transactions a second (on a fixed timetable: transaction i is due at
        start + i / rate; a late one goes at once, none is skipped) for --duration seconds.
        Each: BEGIN IMMEDIATE; INSERT INTO tx (id = seq, 1, 2, …; the insert's wall time; a
        1 KiB random payload); COMMIT. After each COMMIT returns: a line "seq commit_time
        commit_s txn_s" appended to DIR/commits.log (unbuffered, one write), and
        DIR/last.json ({"seq", "time"}) replaced (write + rename, no fsync): a SIGKILL leaves
        both saying what was committed. commit_s is the COMMIT call alone, txn_s BEGIN through
        COMMIT (the write lock's wait included). On a normal end: DIR/summary.json.
    writer.py stats DIR
        summary.json's figures computed from commits.log (for a writer that was killed).
    writer.py pool DIR...
        the latencies of several runs (DIR/commits.log each) as one sample: p50/p99/p99.9/max
        of COMMIT and of the whole transaction over all of them, and each run's p99 apart.
"""
import argparse
import json
import os
import random
import sqlite3
import sys
import time


def connect(db):
    con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA busy_timeout = 5000")
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        sys.exit(f"writer: journal_mode is {mode}, not wal")
    con.execute("PRAGMA synchronous = NORMAL")
    return con


def populate(a):
    if os.path.exists(a.db):
        os.remove(a.db)
    rnd = random.Random(a.seed)
    con = connect(a.db)
    con.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    con.execute("CREATE TABLE tx (id INTEGER PRIMARY KEY, ts REAL NOT NULL, payload BLOB NOT NULL)")
    rows = a.mib * 1024 * 1024 // 4096 * 3  # three 1 KiB rows fill a 4 KiB page
    con.execute("BEGIN")
    con.executemany("INSERT INTO filler (id, payload) VALUES (?, ?)",
                    ((i, rnd.randbytes(1024)) for i in range(1, rows + 1)))
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    print(json.dumps({"filler_rows": rows, "bytes": os.path.getsize(a.db)}))


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def read_commits(out_dir):
    """DIR/commits.log as four lists: seq, commit time, COMMIT s, transaction s."""
    seqs, times, commit, txn = [], [], [], []
    with open(os.path.join(out_dir, "commits.log")) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4:
                continue  # a line torn by the kill
            seqs.append(int(parts[0]))
            times.append(float(parts[1]))
            commit.append(float(parts[2]))
            txn.append(float(parts[3]))
    return seqs, times, commit, txn


def ms(v):
    return None if v is None else round(v * 1000, 3)


def latencies(values):
    v = sorted(values)
    return {"p50": ms(percentile(v, 50)), "p99": ms(percentile(v, 99)),
            "p999": ms(percentile(v, 99.9)), "max": ms(v[-1] if v else None)}


def pool(dirs):
    """Several runs' latencies as one sample, and each run's p99."""
    commit, txn, rounds = [], [], []
    for d in dirs:
        _, _, c, t = read_commits(d)
        commit += c
        txn += t
        rounds.append({"dir": os.path.basename(os.path.normpath(d)), "transactions": len(c),
                       "commit_p99": latencies(c)["p99"], "txn_p99": latencies(t)["p99"]})
    return {"rounds": rounds, "transactions": len(commit), "commit_ms": latencies(commit),
            "txn_ms": latencies(txn)}


def stats_of(out_dir):
    seqs, times, commit, txn = read_commits(out_dir)
    with open(os.path.join(out_dir, "start.json")) as f:
        start = json.load(f)
    span = (times[-1] - start["start"]) if times else 0
    return {
        "transactions": len(seqs),
        "last_seq": seqs[-1] if seqs else 0,
        "last_time": times[-1] if times else None,
        "first_time": times[0] if times else None,
        "start": start["start"],
        "rate_target": start["rate"],
        "rate_achieved": round(len(seqs) / span, 2) if span > 0 else None,
        "commit_ms": latencies(commit),
        "txn_ms": latencies(txn),
        "late_over_100ms": sum(1 for v in txn if v > 0.1),
    }


def run(a):
    os.makedirs(a.out, exist_ok=True)
    con = connect(a.db)
    log_fd = os.open(os.path.join(a.out, "commits.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    last_path = os.path.join(a.out, "last.json")
    rnd = random.Random(a.seed)
    seq = con.execute("SELECT coalesce(max(id), 0) FROM tx").fetchone()[0]
    start = time.time()
    t0 = time.monotonic()
    with open(os.path.join(a.out, "start.json"), "w") as f:
        json.dump({"start": start, "rate": a.rate, "pid": os.getpid()}, f)
    i = busy_errors = 0
    while True:
        due = t0 + i / a.rate
        if due - t0 >= a.duration:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        seq += 1
        payload = rnd.randbytes(1024)
        b0 = time.perf_counter()
        while True:  # a busy error (past busy_timeout) is counted and the same row retried
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO tx (id, ts, payload) VALUES (?, ?, ?)", (seq, time.time(), payload))
                c0 = time.perf_counter()
                con.execute("COMMIT")
                break
            except sqlite3.OperationalError as e:
                busy_errors += 1
                print(f"writer: seq {seq}: {e}", file=sys.stderr)
                if con.in_transaction:
                    con.execute("ROLLBACK")
        c1 = time.perf_counter()
        done = time.time()
        os.write(log_fd, b"%d %.6f %.6f %.6f\n" % (seq, done, c1 - c0, c1 - b0))
        tmp = last_path + ".tmp"
        with open(tmp, "w") as f:
            f.write('{"seq": %d, "time": %.6f, "busy_errors": %d}\n' % (seq, done, busy_errors))
        os.replace(tmp, last_path)
        i += 1
    con.close()
    os.close(log_fd)
    s = stats_of(a.out)
    s["busy_errors"] = busy_errors
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    print(json.dumps(s))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("populate")
    p.add_argument("db")
    p.add_argument("--mib", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    r = sub.add_parser("run")
    r.add_argument("db")
    r.add_argument("--out", required=True)
    r.add_argument("--rate", type=float, default=50)
    r.add_argument("--duration", type=float, default=600)
    r.add_argument("--seed", type=int, default=7)
    s = sub.add_parser("stats")
    s.add_argument("out")
    pl = sub.add_parser("pool")
    pl.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    if a.cmd == "populate":
        populate(a)
    elif a.cmd == "run":
        run(a)
    elif a.cmd == "pool":
        print(json.dumps(pool(a.dirs)))
    else:
        print(json.dumps(stats_of(a.out)))


if __name__ == "__main__":
    main()
