#!/usr/bin/env python3
"""Check a restored database against what the writer committed (bench/replication.sh).

    check.py RESTORED --writer DIR [--at UNIX_TIME] [--filler N]

DIR is the writer's --out (last.json, commits.log). Prints one JSON object:
  integrity     PRAGMA integrity_check's answer ("ok" or its messages joined by "; ")
  rows, max_seq rows of tx and their largest id; contiguous: ids are exactly 1..max_seq
  filler_ok     the pre-populated table is whole (--filler rows)
  last_seq      the last commit the writer saw return (last.json)
  lost          last_seq − max_seq (what a restore of the latest state is missing)
  beyond        rows with an id above last_seq (the one transaction in flight at the kill
                may be there: committed, not yet acknowledged; more would be a bug)
with --at (a restore to a time):
  committed_at  transactions whose COMMIT returned at or before --at (commits.log)
  missing_at    committed_at − rows (the latest of those the restore does not have)
  after_at      rows restored with an id above the last one committed by --at (a state
                newer than asked for)
A database that cannot be opened or read gives {"error": "..."}.
"""
import argparse
import json
import sqlite3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--writer", required=True)
    ap.add_argument("--at", type=float)
    ap.add_argument("--filler", type=int)
    a = ap.parse_args()
    with open(f"{a.writer}/last.json") as f:
        last = json.load(f)["seq"]
    out = {"last_seq": last}
    try:
        con = sqlite3.connect(a.db)
        out["integrity"] = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
        n, mx, mn = con.execute("SELECT count(*), coalesce(max(id), 0), coalesce(min(id), 0) FROM tx").fetchone()
        out.update(rows=n, max_seq=mx, contiguous=(n == mx and (n == 0 or mn == 1)))
        if a.filler is not None:
            out["filler_ok"] = con.execute("SELECT count(*) FROM filler").fetchone()[0] == a.filler
        out["lost"] = last - mx
        out["beyond"] = con.execute("SELECT count(*) FROM tx WHERE id > ?", (last,)).fetchone()[0]
        if a.at is not None:
            committed, last_at = 0, 0
            with open(f"{a.writer}/commits.log") as f:
                for line in f:
                    p = line.split()
                    if len(p) == 4 and float(p[1]) <= a.at:
                        committed += 1
                        last_at = max(last_at, int(p[0]))
            out.update(at=a.at, committed_at=committed, missing_at=committed - n,
                       after_at=con.execute("SELECT count(*) FROM tx WHERE id > ?", (last_at,)).fetchone()[0])
        con.close()
    except sqlite3.Error as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
