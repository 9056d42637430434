#!/usr/bin/env python3
"""bench/callgrind's report: instructions (Ir) per request per process and per thread
from callgrind's dump files. Usage (from bench/callgrind):
cgsum.py DIR COUNT CONCURRENCY FETCH_WAIT_MS SETS IMPL...
DIR/IMPL/{server,client}.run-NN are the counts of the client's run (one file per
thread, --separate-threads=yes); DIR/IMPL/result.json is the client's result line.
Threads with the same name (see thread_cost) are summed and counted."""
import glob
import json
import os
import re
import sys

FN = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
MAIN = re.compile(r"^[a-z_]+_main$")


def thread_cost(path):
    """(name, Ir) of one per-thread dump file. Instrumentation starts mid-run, so the
    dumps have no start_thread frame: a thread is named by the ksf/bench function
    ending in _main it runs (worker_main, reply_main, dr_main, ...), thread 1 is
    "main", and the rest are librdkafka's own (its library has no symbols). The
    inclusive cost of the calls to qsort is left out: the bench clients sort their
    latencies once, for the report, after the last reply."""
    ir, mains, names, sort_ir = 0, set(), {}, 0
    thread, callee, after_calls = None, None, False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if after_calls:  # the line after calls=: position and inclusive cost
                after_calls = False
                if callee == "qsort":
                    sort_ir += int(line.split()[1])
                continue
            if line.startswith("summary:"):
                ir = int(line.split()[1])
            elif line.startswith("thread:"):
                thread = int(line.split()[1])
            elif line.startswith("calls="):
                after_calls = True
            else:
                m = FN.match(line)
                if not m:
                    continue
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "?")
                if line.startswith("cfn="):
                    callee = name
                elif MAIN.match(name):
                    mains.add(name)
    ir -= sort_ir
    if thread == 1:
        return "main", ir
    if mains:
        return "/".join(sorted(mains)), ir
    return "librdkafka internal", ir


def process(d, proc):
    """{name: [threads, Ir]} and the process total of DIR/PROC.run-*."""
    per = {}
    for path in sorted(glob.glob(os.path.join(d, proc + ".run-*"))):
        routine, ir = thread_cost(path)
        t = per.setdefault(routine, [0, 0])
        t[0] += 1
        t[1] += ir
    return per, sum(v[1] for v in per.values())


def main():
    top, count, conc, fw, sets = sys.argv[1:6]
    impls = sys.argv[6:]
    data = {}
    for impl in impls:
        d = os.path.join(top, impl)
        with open(os.path.join(d, "result.json")) as f:
            res = json.loads(f.read().strip().splitlines()[-1])
        data[impl] = {"n": res["count"], "ok": res["ok"]}
        for proc in ("client", "server"):
            data[impl][proc] = process(d, proc)
    emit = not any(data[i]["server"][0] for i in impls)
    out = [f"Instructions per {'event' if emit else 'request'} (callgrind Ir, the run only: from the client's "
           f"first request to its result) at {count} requests, {conc} in flight, "
           f"embedded broker, consumer fetch.wait.max.ms={fw}"
           + (f", {sets}" if sets.strip() else "") + ".", ""]
    # With the floor first, each other implementation gets a ratio column against it.
    over = impls[1:] if impls[0] == "floor" else []
    hdr = "| process / thread | " + " | ".join(impls) + " |" + "".join(
        f" {i} / floor |" for i in over)
    out += [hdr, "| --- |" + " ---: |" * (len(impls) + len(over))]

    def row(label, vals):
        cells = [("-" if v is None else f"{v:,.0f}") for v in vals]
        r = ""
        for k in range(1, 1 + len(over)):
            r += (f" {vals[k] / vals[0]:.2f}x |" if vals[k] is not None and vals[0]
                  else " - |")
        out.append(f"| {label} | " + " | ".join(cells) + " |" + r)

    totals = {i: 0 for i in impls}
    # Events (bench/callgrind --emit) have no server: no server rows then.
    procs = [p for p in ("client", "server") if any(data[i][p][0] for i in impls)]
    for proc in procs:
        row(f"**{proc}, whole process**",
            [data[i][proc][1] / data[i]["n"] for i in impls])
        for i in impls:
            totals[i] += data[i][proc][1] / data[i]["n"]
        routines = sorted({r for i in impls for r in data[i][proc][0]},
                          key=lambda r: -max(data[i][proc][0].get(r, [0, 0])[1]
                                             for i in impls))
        for r in routines:
            vals, counts = [], []
            for i in impls:
                t = data[i][proc][0].get(r)
                vals.append(None if t is None else t[1] / data[i]["n"])
                counts.append("-" if t is None else str(t[0]))
            row(f"{proc}: {r} ({'/'.join(counts)} threads)", vals)
    if not emit:
        row("**client + server**", [totals[i] for i in impls])
    out += ["", "Requests answered: " + ", ".join(
        f"{i} {data[i]['ok']} of {data[i]['n']}" for i in impls) + "."]
    print("\n".join(out))
    if os.environ.get("CG_JSON"):  # for bench/table.py's instruction rows
        # "own": the process's own threads (what the floor or ksf runs: its loop, the
        # reply thread, workers), without librdkafka's: the per-message work that
        # waits for a CPU beside librdkafka's threads (docs/benchmarks.md).
        summary = {i: {p: data[i][p][1] / data[i]["n"] for p in ("client", "server")}
                   for i in impls}
        for i in impls:
            for p in ("client", "server"):
                summary[i][p + "_own"] = sum(
                    ir for r, (_, ir) in data[i][p][0].items()
                    if r != "librdkafka internal") / data[i]["n"]
        summary["setup"] = out[0]
        with open(os.environ["CG_JSON"], "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
