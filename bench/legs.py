#!/usr/bin/env python3
"""bench/legs' analysis: split sequential round trips into their four legs.

  legs.py round CLIENT.legs SERVER.legs SKIP   -> one JSON line: the legs' medians (us)
  legs.py table ROUNDS.jsonl OUT.md [SETUP]    -> the markdown table of every impl

The .legs files are bench/legs_shim.c's: "P <us>" for each rd_kafka_producev call and
"C <us>" for each message handed to the program. With one request in flight, round trip
k is the client's k-th P (request produced), the server's k-th C (request received),
the server's k-th P (reply produced) and the client's k-th C (reply received); the
client's own time is from a reply received to the next request produced. The first
SKIP round trips (connections warming up) are left out."""
import json
import sys

LEGS = [  # (key, label)
    ("request", "request through the broker: client produce -> server receive"),
    ("server", "the server's own time: receive -> reply produced"),
    ("reply", "reply through the broker: server produce -> client receive"),
    ("client", "the client's own time: reply received -> next request produced"),
    ("round_trip", "round trip: client produce -> client receive"),
]


def median(values):
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2.0


def load(path):
    out = {"P": [], "C": []}
    with open(path) as f:
        for line in f:
            kind, us = line.split()
            out[kind].append(int(us))
    return out


def one_round(client_path, server_path, skip):
    c, s = load(client_path), load(server_path)
    counts = [len(c["P"]), len(s["C"]), len(s["P"]), len(c["C"])]
    if len(set(counts)) != 1:
        # Not one reply per request: the pairing below would be wrong.
        return {"error": "unequal counts (client produced, server received, server "
                f"produced, client received): {counts}"}
    n = counts[0]
    if n <= skip + 1:
        return {"error": f"{n} round trips, not more than the {skip} skipped + 1"}
    ks = range(skip, n)
    legs = {
        "request": [s["C"][k] - c["P"][k] for k in ks],
        "server": [s["P"][k] - s["C"][k] for k in ks],
        "reply": [c["C"][k] - s["P"][k] for k in ks],
        "client": [c["P"][k + 1] - c["C"][k] for k in ks if k + 1 < n],
        "round_trip": [c["C"][k] - c["P"][k] for k in ks],
    }
    if any(x < 0 for v in legs.values() for x in v):
        return {"error": "a negative leg: the events are not one request at a time"}
    out = {key: median(v) for key, v in legs.items()}
    out["count"] = n - skip
    return out


def table(rounds_path, out_md, setup=""):
    by = {}
    for line in open(rounds_path):
        if line.strip():
            r = json.loads(line)
            by.setdefault(r["impl"], []).append(r)
    impls = list(by)
    good = {i: [r for r in by[i] if "error" not in r] for i in impls}
    lines = ["| leg (us; median over the rounds of each round's median) | "
             + " | ".join(impls) + " |",
             "| --- |" + " ---: |" * len(impls)]
    for key, label in LEGS:
        cells = []
        for i in impls:
            m = median([r[key] for r in good[i]])
            cells.append("-" if m is None else f"{m:,.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| rounds used (of run) | " + " | ".join(
        f"{len(good[i])} of {len(by[i])}" for i in impls) + " |")
    errors = [f"{i} round {r['round']}: {r['error']}" for i in impls for r in by[i]
              if "error" in r]
    md = ((setup + "\n\n" if setup else "") + "\n".join(lines) + "\n"
          + "".join(f"\nLeft out: {e}" for e in errors))
    with open(out_md, "w") as f:
        f.write(md + ("\n" if errors else ""))
    print(md)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "round":
        print(json.dumps(one_round(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "table":
        table(*sys.argv[2:])
    else:
        sys.exit(__doc__)
