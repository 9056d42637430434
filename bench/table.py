#!/usr/bin/env python3
"""bench/run's report: turn the per-scenario JSON lines into one markdown table with
ratios, and write it with the raw results. Usage (from bench/run):
table.py RESULTS.jsonl MACHINE FETCH_WAIT_MS SECONDS ROUNDS OUT.json OUT.md [BROKER SETUP
[CALLGRIND.json [CALLGRIND256.json]]]
BROKER is mock (default) or kafka; SETUP is the sentence that says which broker ran and
with which settings (default: the embedded broker's); CALLGRIND.json is bench/cgsum.py's
--json output (instructions per request per process), added as rows when given;
CALLGRIND256.json the same at 256 in flight (with each process's own threads apart).
Either may be an empty string."""
import json
import sys

src, machine, fw, secs, rounds, out_json, out_md = sys.argv[1:8]
broker = sys.argv[8] if len(sys.argv) > 8 else "mock"
callgrind = sys.argv[10] if len(sys.argv) > 10 else ""
callgrind256 = sys.argv[11] if len(sys.argv) > 11 else ""
setup = sys.argv[9] if len(sys.argv) > 9 else (
    "Embedded broker (librdkafka mock), loopback, one fresh broker per scenario; C "
    f"consumers with fetch.wait.max.ms={fw}")
rows = [json.loads(l) for l in open(src) if l.strip()]
by = {}  # (impl, scenario) -> that scenario's runs, one per round
for r in rows:
    by.setdefault((r["impl"], r["scenario"]), []).append(r)
# ksf-lean (ksf with its lean settings: raw handler and replies, no trace or deadline
# headers; docs/benchmarks.md) gets its own column and ratio when the run has it.
LEAN = any(r["impl"] == "ksf-lean" for r in rows)
C_IMPLS = ["floor", "ksf"] + (["ksf-lean"] if LEAN else [])  # the interleaved rounds
IMPLS = C_IMPLS + ["nest-tuned", "nest-default"]
NAMES = {"floor": "floor (librdkafka)", "ksf": "ksf", "ksf-lean": "ksf lean",
         "nest-tuned": "NestJS tuned", "nest-default": "NestJS default"}


def median(values):
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2.0


def over_runs(impl, scen, get):
    """The median over the rounds of get(run); None without a usable run."""
    return median(get(r) for r in by.get((impl, scen), []))


def cl(key):
    """A figure of the client's result line."""
    return lambda r: r["client"].get(key) if r.get("client") else None


def fd(key):
    return lambda r: r.get(key)


def idle_pct(who):
    return lambda r: (100.0 * r[who + "_idle_ms"] / 1000.0 / r["idle_s"]
                      if r.get("idle_s") else None)


def cpu_us(who):
    """CPU per request of one process (us): its own CPU during the run / requests."""
    def one(r):
        c = r.get("client")
        if not c or not c.get("count"):
            return None
        ms = c.get("cpu_ms") if who == "client" else r.get("server_cpu_ms")
        if who == "both":
            ms = c.get("cpu_ms", 0) + r.get("server_cpu_ms", 0)
        return None if ms is None else ms * 1000.0 / c["count"]
    return one


def mb(get):
    return lambda r: None if get(r) is None else get(r) / 1024.0


# (label, scenario, figure of one run, lower_is_better, target for ksf/floor, target
# for NestJS tuned vs ksf). The table shows each figure's median over the rounds, and
# the "every run" table below it each round's figure of the same function.
METRICS = [
    ("cold start: process start to first reply (ms)", "cold", cl("first_reply_ms"), True,
     "", ""),
    ("sequential p50 (us)", "seq", cl("p50_us"), True, "<= 1.1", ""),
    ("sequential p99 (us)", "seq", cl("p99_us"), True, "", ">= 10"),
    ("sequential requests/s", "seq", cl("rps"), False, "", ""),
    ("64 in flight: requests/s", "c64", cl("rps"), False, ">= 0.95", ">= 50"),
    ("64 in flight: p50 (us)", "c64", cl("p50_us"), True, "", ">= 10"),
    ("64 in flight: p90 (us)", "c64", cl("p90_us"), True, "", ""),
    ("64 in flight: p99 (us)", "c64", cl("p99_us"), True, "", ""),
    ("64 in flight: CPU per request, client (us)", "c64", cpu_us("client"), True, "", ""),
    ("64 in flight: CPU per request, server (us)", "c64", cpu_us("server"), True, "", ""),
    ("64 in flight: CPU per request, client + server (us)", "c64", cpu_us("both"), True,
     "<= 1.3", ">= 10"),
    ("256 in flight: requests/s", "c256", cl("rps"), False, ">= 0.95", ""),
    ("256 in flight: p50 (us)", "c256", cl("p50_us"), True, "", ""),
    ("256 in flight: p90 (us)", "c256", cl("p90_us"), True, "", ""),
    ("256 in flight: CPU per request, client (us)", "c256", cpu_us("client"), True, "",
     ""),
    ("256 in flight: CPU per request, server (us)", "c256", cpu_us("server"), True, "",
     ""),
    ("256 in flight: CPU per request, client + server (us)", "c256", cpu_us("both"), True,
     "<= 1.3", ""),
    ("emit, 1000 in flight: events/s", "emit", cl("rps"), False, ">= 0.8", ""),
    ("emit: ack p50 (us)", "emit", cl("p50_us"), True, "", ""),
    ("emit: CPU per event, client (us)", "emit", cpu_us("client"), True, "", ""),
    ("idle CPU, client (% of a core)", "cold", idle_pct("client"), True, "", ""),
    ("idle CPU, server (% of a core)", "cold", idle_pct("server"), True, "", ""),
    ("RSS client, peak at 64 in flight (MB)", "c64", mb(fd("client_rss_kb")), True, "",
     ""),
    ("RSS server, peak at 64 in flight (MB)", "c64", mb(fd("server_rss_kb")), True, "",
     ">= 5"),
]


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# bench/run's sequential scenario may have more rounds than the others (BENCH_SEQ_ROUNDS).
seq_rounds = len(by.get(("floor", "seq"), []))
seq_note = (f"; the sequential scenario: {seq_rounds} rounds"
            if seq_rounds and seq_rounds != int(rounds) else "")
lines = [
    f"Machine: {machine}. {setup}; {secs} s per throughput run; "
    f"{', '.join(NAMES[i] for i in C_IMPLS)}: median of {rounds} interleaved rounds "
    f"(cold start and idle CPU: one run{seq_note}; every round's figure is in the "
    "second table), NestJS: one run.",
    "",
    "| metric | " + " | ".join(NAMES[i] for i in IMPLS) + " | ksf / floor (target) |"
    + (" ksf lean / floor (target) |" if LEAN else "") + " NestJS tuned vs ksf (target) |",
    "| --- | " + " | ".join("---:" for _ in IMPLS) + " | ---: |" + (" ---: |" if LEAN else "")
    + " ---: |",
]
report = {"machine": machine, "broker": broker, "setup": setup, "seconds": float(secs),
          "rounds": int(rounds), "seq_rounds": seq_rounds or int(rounds), "results": rows,
          "table": []}
if broker == "mock":
    report["fetch_wait_max_ms"] = int(fw)
for label, scen, get, lower, t_floor, t_nest in METRICS:
    vals = {i: over_runs(i, scen, get) for i in IMPLS}
    r_floor = ratio(vals["ksf"], vals["floor"])
    r_lean = ratio(vals.get("ksf-lean"), vals["floor"])
    # "NestJS vs ksf" is how many times better ksf is: nest/ksf when lower is better.
    r_nest = ratio(vals["nest-tuned"], vals["ksf"]) if lower else ratio(
        vals["ksf"], vals["nest-tuned"])

    def shown(r):
        return "-" if r is None else f"{r:.2f}x" + (f" ({t_floor})" if t_floor else "")
    rn = "-" if r_nest is None else f"{r_nest:.1f}x" + (f" ({t_nest})" if t_nest else "")
    lines.append(f"| {label} | " + " | ".join(fmt(vals[i]) for i in IMPLS)
                 + f" | {shown(r_floor)} |" + (f" {shown(r_lean)} |" if LEAN else "")
                 + f" {rn} |")
    entry = {"metric": label, "values": vals, "ksf_over_floor": r_floor,
             "ksf_advantage_over_nest_tuned": r_nest}
    if LEAN:
        entry["ksf_lean_over_floor"] = r_lean
    report["table"].append(entry)
# Instructions per request from bench/callgrind (run by bench/run after the rounds).
cg = json.load(open(callgrind)) if callgrind else None
if cg:
    for who in ("client", "server", "both"):
        vals = {i: (cg[i]["client"] + cg[i]["server"] if who == "both" else cg[i][who])
                if i in cg else None for i in IMPLS}
        label = ("instructions per request, " + ("client + server" if who == "both" else
                                                 who) + " (callgrind)")

        def shown(r):
            return ("-" if r is None else f"{r:.2f}x"
                    + (" (<= 1.3)" if who == "both" else ""))
        r_floor = ratio(vals["ksf"], vals["floor"])
        r_lean = ratio(vals.get("ksf-lean"), vals["floor"])
        lines.append(f"| {label} | " + " | ".join(fmt(vals[i]) for i in IMPLS)
                     + f" | {shown(r_floor)} |" + (f" {shown(r_lean)} |" if LEAN else "")
                     + " - |")
        entry = {"metric": label, "values": vals, "ksf_over_floor": r_floor}
        if LEAN:
            entry["ksf_lean_over_floor"] = r_lean
        report["table"].append(entry)
    lines += ["", f"Instructions: {cg.get('setup', '')}"]
# The same at 256 in flight, with the processes' own threads apart: at 256 in flight
# on Kafka the requests/s wait for them (docs/benchmarks.md).
cg256 = json.load(open(callgrind256)) if callgrind256 else None
if cg256:
    insert_at = len(lines) - 2 if cg else len(lines)
    extra = []
    for label, get in (
            ("instructions per request, client + server, 256 in flight (callgrind)",
             lambda c: c["client"] + c["server"]),
            ("instructions per request at 256 in flight, client's own threads "
             "(not librdkafka's)", lambda c: c.get("client_own")),
            ("instructions per request at 256 in flight, server's own threads "
             "(not librdkafka's)", lambda c: c.get("server_own"))):
        vals = {i: get(cg256[i]) if i in cg256 else None for i in IMPLS}
        r_floor = ratio(vals["ksf"], vals["floor"])
        r_lean = ratio(vals.get("ksf-lean"), vals["floor"])

        def shown256(r):
            return "-" if r is None else f"{r:.2f}x"
        extra.append(f"| {label} | " + " | ".join(fmt(vals[i]) for i in IMPLS)
                     + f" | {shown256(r_floor)} |"
                     + (f" {shown256(r_lean)} |" if LEAN else "") + " - |")
        entry = {"metric": label, "values": vals, "ksf_over_floor": r_floor}
        if LEAN:
            entry["ksf_lean_over_floor"] = r_lean
        report["table"].append(entry)
    lines[insert_at:insert_at] = extra
    lines += ["", f"At 256 in flight: {cg256.get('setup', '')}"]
# Every round's figure of the floor and ksf, so the medians above can be checked.
nrounds = max([r["round"] for r in rows if r["impl"] in C_IMPLS] or [0])
every = ["", f"Every run ({', '.join(NAMES[i] for i in C_IMPLS)}; the table above shows "
         "the median of these):", "",
          "| metric | impl | " + " | ".join(f"round {k}" for k in range(1, nrounds + 1))
          + " | median |",
          "| --- | --- |" + " ---: |" * (nrounds + 1)]
for label, scen, get, lower, t_floor, t_nest in METRICS:
    if scen == "cold":
        continue  # one run only
    for i in C_IMPLS:
        runs = {r["round"]: get(r) for r in by.get((i, scen), [])}
        if not runs:
            continue
        every.append(f"| {label} | {i} | " + " | ".join(
            fmt(runs.get(k)) for k in range(1, nrounds + 1))
            + f" | {fmt(over_runs(i, scen, get))} |")
dflt = (by.get(("ksf-defaults", "cold")) or [None])[0]
if dflt and dflt.get("idle_s"):
    lines += ["", "ksf at its own defaults (fetch.wait.max.ms=100): idle CPU client "
              f"{100.0 * dflt['client_idle_ms'] / 1000 / dflt['idle_s']:.1f} %, server "
              f"{100.0 * dflt['server_idle_ms'] / 1000 / dflt['idle_s']:.1f} % of a core; "
              f"cold start {fmt(dflt['client'] and dflt['client']['first_reply_ms'])} ms."]
if broker == "kafka":
    # The ksf column is ksf at its defaults (fetch.wait.max.ms=100); ksf-fw0 the same
    # with every fetch answered at once. Equal latencies mean the broker answers a held
    # fetch when data arrives; holding it would add about half the wait per hop.
    f0 = [over_runs("ksf-fw0", "seq", cl(k)) for k in ("p50_us", "p90_us", "p99_us")]
    fd = [over_runs("ksf", "seq", cl(k)) for k in ("p50_us", "p90_us", "p99_us")]
    if None not in f0 + fd:
        # Holding would add about 2 x 50 ms to the median; 10 ms of difference is noise.
        early = fd[0] < f0[0] + 10000
        lines += ["", f"Wake-up check: ksf's sequential round trip (p50 / p90 / p99, us) at "
                  f"its default fetch.wait.max.ms=100 is {' / '.join(fmt(v) for v in fd)}, "
                  f"with fetch.wait.max.ms=0 {' / '.join(fmt(v) for v in f0)}: "
                  + ("the broker answers a held fetch when data arrives (holding it would "
                     "add about 50,000 us per hop, two hops per round trip)." if early else
                     "the held fetches cost latency here, which a Kafka broker should not "
                     "do; look at the broker's settings.")]
        report["wake_check"] = {"ksf_default_seq_us": fd, "ksf_fw0_seq_us": f0,
                                "answered_early": early}
    lines += ["", "The ksf column is ksf at its own defaults (on the embedded broker, "
              "where it runs at fetch.wait.max.ms=0, the separate ksf-defaults line "
              "says what they cost)."]
lines += ["", "Ratios: \"ksf / floor\" is ksf's value divided by the floor's (latency: "
          "lower is better; rate: higher is better). \"NestJS tuned vs ksf\" is how many "
          "times better ksf does than NestJS tuned."
          + (" \"ksf lean / floor\" is the same for ksf with its lean settings (raw "
             "handler and replies, no traceparent or ksf_deadline headers)." if LEAN else "")
          + " Figures are from one invocation of bench/run on a shared 2-core machine; "
          "see docs/benchmarks.md."]
md = "\n".join(lines + every) + "\n"
with open(out_json, "w") as f:
    json.dump(report, f, indent=1)
with open(out_md, "w") as f:
    f.write(md)
