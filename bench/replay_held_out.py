#!/usr/bin/env python3
"""Replays a real log's held-out users against a running recserve, one call each.

The held-out users of `recserve-train --split=time --split_time=T` are those with events
both before and after T. Each gets one Recommend call (n=20) carrying their newest 50
events before T, sent with recserve-cli. Run the server with its clock at T (e.g. under
Debian's faketime) so that its impression log's answers sit at T in the log's time and
the log's later events label them (docs/benchmarks.md, served impressions on a real log).
A seeded sample of USERS users.

usage: replay_held_out.py EVENTS_CSV_GZ T_SECONDS USERS RECSERVE_CLI ADDRESS
"""
import csv
import gzip
import random
import subprocess
import sys


def main():
    path, t, users, cli, address = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    before, after = {}, set()
    with gzip.open(path, "rt") as f:
        for row in csv.DictReader(f):
            ts = int(float(row["timestamp"]))
            if ts < t:
                before.setdefault(row["user_id"], []).append((ts, row["item_id"], row["event_type"]))
            else:
                after.add(row["user_id"])
    held_out = sorted(u for u in after if u in before)
    random.Random(1).shuffle(held_out)
    sent = failed = 0
    for user in held_out[:users]:
        events = sorted(before[user])[-50:]
        arg = ",".join(f"{item}:{kind}@{ts * 1000}" for ts, item, kind in events)
        r = subprocess.run([cli, "recommend", f"--address={address}", f"--user={user}", f"--events={arg}", "--n=20"],
                           capture_output=True, text=True)
        sent += 1
        failed += r.returncode != 0
        if r.returncode != 0 and failed <= 3:
            print("failed:", user, r.stderr.strip()[:300], file=sys.stderr)
    print(f"{len(held_out)} held-out users; {sent} requests sent, {failed} failed")


if __name__ == "__main__":
    main()
