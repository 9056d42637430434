#!/usr/bin/env python3
"""Keeps bench/run's report honest: bench/table.py and bench/cgsum.py run on made-up
results with known answers. Checks that the table shows every round's figure, that each
median and each ksf/floor ratio is computed from the runs shown, that CPU per request
is the process's own CPU over the requests, and that cgsum.py divides instructions by
requests, names threads and leaves the client's latency sort out.
Usage: bench_table.py SOURCE_ROOT"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

root = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def num(cell):
    cell = cell.strip().split(" ")[0].rstrip("x")
    return None if cell in ("-", "") else float(cell.replace(",", ""))


def run_table(root, src, out_json, out_md, cgj, main_cols, nrounds, impls, cg256=""):
    """bench/table.py on SRC; returns its markdown, the main table's rows with
    MAIN_COLS cells by metric, and the every-run rows of IMPLS with NROUNDS rounds by
    (metric, impl)."""
    subprocess.run([sys.executable, os.path.join(root, "bench", "table.py"), src,
                    "machine", "0", "3", str(ROUNDS), out_json, out_md, "mock",
                    "setup", cgj, cg256], check=True)
    md = open(out_md).read()
    main, every = {}, {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == main_cols and cells[0] not in ("metric", "---"):
            main[cells[0]] = cells
        elif len(cells) == nrounds + 3 and cells[1] in impls:
            every[(cells[0], cells[1])] = cells
    return md, main, every


def client_line(rps, p50, cpu_ms, count):
    return {"pattern": "bench.echo", "mode": "send", "concurrency": 64, "count": count,
            "ok": count, "errors": 0, "timeouts": 0, "p50_us": p50, "p90_us": p50 * 2,
            "p99_us": p50 * 3, "max_us": p50 * 4, "rps": rps, "elapsed_s": 3.0,
            "connect_ms": 5.0, "first_reply_ms": 9.0, "cpu_ms": cpu_ms,
            "peak_rss_kb": 8000}


ROUNDS = 8
# Per round, floor and ksf figures that differ from round to round (and are not sorted)
# so a median taken over the wrong runs, or a ratio of anything but the medians, shows.
FLOOR_RPS = [20000, 26000, 21000, 25000, 22000, 24000, 23000, 19000]  # median 22,500
KSF_RPS = [15000, 18000, 16000, 17500, 16500, 17000, 15500, 18500]    # median 16,750
rows = []
for r in range(1, ROUNDS + 1):
    for impl, rps in (("floor", FLOOR_RPS[r - 1]), ("ksf", KSF_RPS[r - 1])):
        count = int(rps * 3)
        # client CPU: 10 us per request for the floor, 14 for ksf; server 8 and 12 +
        # the round number (so the medians are 12.5 and 16.5 us)
        ccpu = count * (10 if impl == "floor" else 14) / 1000.0
        scpu = count * ((8 if impl == "floor" else 12) + r) / 1000.0
        for scen in ("seq", "c64", "c256", "emit"):
            rows.append({"impl": impl, "scenario": scen, "round": r,
                         "client": client_line(rps, 1000 + 10 * r, ccpu, count),
                         "server_cpu_ms": scpu, "server_cpu_source": "getrusage",
                         "server_handled": count, "client_rss_kb": 9000,
                         "server_rss_kb": 9100, "idle_s": 0, "client_idle_ms": 0,
                         "server_idle_ms": 0})
cg = {"floor": {"client": 17000.0, "server": 16000.0},
      "ksf": {"client": 29000.0, "server": 31000.0}, "setup": "Instructions per request"}

with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "results.jsonl")
    with open(src, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    cgj = os.path.join(tmp, "cg.json")
    with open(cgj, "w") as f:
        json.dump(cg, f)
    out_json, out_md = os.path.join(tmp, "t.json"), os.path.join(tmp, "t.md")
    # The main table: metric -> cells; the every-run table: (metric, impl) -> runs.
    md, main, every = run_table(root, src, out_json, out_md, cgj, 7, ROUNDS,
                                ("floor", "ksf"))
    report = json.load(open(out_json))
    check(len(every) > 0, "no every-run table")
    header = [l for l in md.splitlines() if l.startswith("| metric | impl |")]
    check(header and header[0].count("round ") == ROUNDS,
          f"every-run table does not have {ROUNDS} round columns")

    for (metric, impl), cells in every.items():
        runs = [num(c) for c in cells[2:2 + ROUNDS]]
        shown = num(cells[-1])
        check(None not in runs, f"{metric} {impl}: a round is missing")
        if None in runs:
            continue
        want = statistics.median(runs)
        # cells are rounded for display: allow the rounding of the figures shown
        check(abs(shown - want) <= max(0.011, 0.0051 * abs(want)),
              f"{metric} {impl}: median shown {shown}, of the runs shown {want}")
        col = 1 if impl == "floor" else 2
        if metric in main:
            check(num(main[metric][col]) == shown,
                  f"{metric}: main table {impl} {main[metric][col]} is not the "
                  f"every-run median {cells[-1]}")

    # Exact figures this input implies.
    rps = main["64 in flight: requests/s"]
    check(num(rps[1]) == 22500 and num(rps[2]) == 16750,
          f"c64 requests/s medians {rps[1]} / {rps[2]}, want 22,500 / 16,750")
    check(rps[5].startswith("0.74x"), f"c64 ratio {rps[5]}, want 0.74x (16750/22500)")
    cpu_c = main["64 in flight: CPU per request, client (us)"]
    cpu_s = main["64 in flight: CPU per request, server (us)"]
    cpu_b = main["64 in flight: CPU per request, client + server (us)"]
    check(num(cpu_c[1]) == 10.0 and num(cpu_c[2]) == 14.0,
          f"client CPU per request {cpu_c[1]} / {cpu_c[2]}, want 10.0 / 14.0")
    check(num(cpu_s[1]) == 12.5 and num(cpu_s[2]) == 16.5,
          f"server CPU per request {cpu_s[1]} / {cpu_s[2]}, want 12.5 / 16.5")
    check(num(cpu_b[1]) == 22.5 and num(cpu_b[2]) == 30.5,
          f"client + server CPU {cpu_b[1]} / {cpu_b[2]}, want 22.5 / 30.5")
    check(cpu_b[5].startswith("1.36x"), f"CPU ratio {cpu_b[5]}, want 1.36x (30.5/22.5)")
    ins = main.get("instructions per request, client + server (callgrind)")
    check(ins is not None and num(ins[1]) == 33000 and num(ins[2]) == 60000
          and ins[5].startswith("1.82x"),
          f"instruction row {ins}, want 33,000 / 60,000 / 1.82x")
    # Every ratio in the main table is ksf's median over the floor's, as shown.
    for metric, cells in main.items():
        f, k, r = num(cells[1]), num(cells[2]), cells[5]
        if f and k is not None and r != "-":
            want = k / f
            check(abs(num(r) - want) <= 0.006 + 0.01 * want,
                  f"{metric}: ratio {r}, but {cells[2]} / {cells[1]} = {want:.3f}")
    check(len(report["results"]) == len(rows), "the JSON report lacks raw results")

    # With ksf-lean in the rounds: its own column and ratio, and its rows in the every-run
    # table (its requests/s per round: the ksf figures + 4,000, median 20,750).
    lean_src = os.path.join(tmp, "lean.jsonl")
    with open(lean_src, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            if r["impl"] == "ksf":
                lr = json.loads(json.dumps(r))
                lr["impl"] = "ksf-lean"
                lr["client"]["rps"] += 4000
                f.write(json.dumps(lr) + "\n")
    cg_lean = dict(cg, **{"ksf-lean": {"client": 20000.0, "server": 19000.0}})
    with open(cgj, "w") as f:
        json.dump(cg_lean, f)
    # At 256 in flight (bench/run's second bench/callgrind): whole processes and their
    # own threads, each row with ksf's and ksf-lean's ratio over the floor's.
    cg256 = os.path.join(tmp, "cg256.json")
    with open(cg256, "w") as f:
        json.dump({"floor": {"client": 13000.0, "server": 12000.0, "client_own": 8000.0,
                             "server_own": 7000.0},
                   "ksf": {"client": 22000.0, "server": 23000.0, "client_own": 16000.0,
                           "server_own": 17500.0},
                   "ksf-lean": {"client": 16000.0, "server": 15500.0,
                                "client_own": 10400.0, "server_own": 11200.0},
                   "setup": "made up, 256 in flight"}, f)
    lmd, lmain, lev_rows = run_table(root, lean_src, out_json, out_md, cgj, 9, ROUNDS,
                                     ("ksf-lean",), cg256)
    for metric, want in (
            ("instructions per request, client + server, 256 in flight (callgrind)",
             (25000, 45000, 31500, "1.80x", "1.26x")),
            ("instructions per request at 256 in flight, client's own threads "
             "(not librdkafka's)", (8000, 16000, 10400, "2.00x", "1.30x")),
            ("instructions per request at 256 in flight, server's own threads "
             "(not librdkafka's)", (7000, 17500, 11200, "2.50x", "1.60x"))):
        row = lmain.get(metric)
        check(row is not None and [num(c) for c in row[1:4]] == list(want[:3])
              and row[6] == want[3] and row[7] == want[4],
              f"256 instruction row {metric}: {row}, want {want}")
    check("At 256 in flight: made up, 256 in flight" in lmd,
          "the 256-in-flight instruction counts' setup line is missing")
    levery = {metric: cells for (metric, _), cells in lev_rows.items()}
    lrps = lmain.get("64 in flight: requests/s")
    check(lrps is not None and num(lrps[1]) == 22500 and num(lrps[2]) == 16750
          and num(lrps[3]) == 20750 and lrps[6].startswith("0.74x")
          and lrps[7].startswith("0.92x (>= 0.95)"),
          f"lean table c64 requests/s row {lrps}, want 22,500 / 16,750 / 20,750, "
          "0.74x, 0.92x (>= 0.95)")
    lins = lmain.get("instructions per request, client + server (callgrind)")
    check(lins is not None and num(lins[3]) == 39000 and lins[7].startswith("1.18x"),
          f"lean instruction row {lins}, want 39,000 and 1.18x (39,000 / 33,000)")
    lev = levery.get("64 in flight: requests/s")
    check(lev is not None and [num(c) for c in lev[2:2 + ROUNDS]]
          == [k + 4000 for k in KSF_RPS] and num(lev[-1]) == 20750,
          f"lean every-run row {lev}, want every ksf round + 4,000, median 20,750")
    with open(cgj, "w") as f:
        json.dump(cg, f)

    # More sequential rounds than throughput ones (BENCH_SEQ_ROUNDS=12, rounds 8): the
    # every-run table has 12 round columns, the sequential rows a figure in each and
    # their median over all 12 (floor p50 1,000 + 10 * round: 1,065; ksf 1,100 + 10 *
    # round: 1,165), the throughput rows "-" after round 8 and their median over 8.
    SEQ_ROUNDS = 12
    seq_src = os.path.join(tmp, "seq.jsonl")
    with open(seq_src, "w") as f:
        for r in rows:  # the floor's first 8 sequential runs are rows' own
            if not (r["impl"] == "ksf" and r["scenario"] == "seq"):
                f.write(json.dumps(r) + "\n")
        for r in range(1, SEQ_ROUNDS + 1):
            for impl, base in (("floor", 1000), ("ksf", 1100)):
                if impl == "floor" and r <= ROUNDS:
                    continue
                f.write(json.dumps({"impl": impl, "scenario": "seq", "round": r,
                                    "client": client_line(300.0, base + 10 * r, 10.0,
                                                          2000),
                                    "server_cpu_ms": 5.0}) + "\n")
    smd, smain, severy = run_table(root, seq_src, out_json, out_md, cgj, 7, SEQ_ROUNDS,
                                   ("floor", "ksf"))
    sheader = [l for l in smd.splitlines() if l.startswith("| metric | impl |")]
    check(sheader and sheader[0].count("round ") == SEQ_ROUNDS,
          f"every-run table does not have {SEQ_ROUNDS} round columns with extra "
          "sequential rounds")
    check("median of 8 interleaved rounds (cold start and idle CPU: one run; the "
          "sequential scenario: 12 rounds;" in smd,
          "the table's first sentence does not give the sequential rounds")
    sp50 = smain.get("sequential p50 (us)")
    check(sp50 is not None and num(sp50[1]) == 1065 and num(sp50[2]) == 1165
          and sp50[5].startswith("1.09x"),
          f"sequential p50 row {sp50}, want 1,065 / 1,165 / 1.09x (medians of 12)")
    fseq = severy.get(("sequential p50 (us)", "floor"))
    check(fseq is not None and [num(c) for c in fseq[2:2 + SEQ_ROUNDS]]
          == [1000 + 10 * r for r in range(1, SEQ_ROUNDS + 1)],
          f"floor's sequential every-run row {fseq}, want 1,010 .. 1,120")
    frps = severy.get(("64 in flight: requests/s", "floor"))
    check(frps is not None and [num(c) for c in frps[2:2 + SEQ_ROUNDS]]
          == FLOOR_RPS + [None] * (SEQ_ROUNDS - ROUNDS) and num(frps[-1]) == 22500,
          f"floor's c64 every-run row {frps}, want its 8 rounds, '-' after, median "
          "22,500")
    check(json.load(open(out_json)).get("seq_rounds") == SEQ_ROUNDS,
          "the JSON report lacks seq_rounds")

    # The real-Kafka variant: the wake-up check compares ksf with ksf-fw0.
    with open(src, "a") as f:
        for r in range(1, ROUNDS + 1):
            f.write(json.dumps({"impl": "ksf-fw0", "scenario": "seq", "round": r,
                                "client": client_line(100.0, 5000, 10.0, 100),
                                "server_cpu_ms": 5.0}) + "\n")
    subprocess.run([sys.executable, os.path.join(root, "bench", "table.py"), src,
                    "machine", "0", "3", str(ROUNDS), out_json, out_md, "kafka",
                    "setup", cgj], check=True)
    kmd = open(out_md).read()
    check("Wake-up check: ksf's sequential round trip (p50 / p90 / p99, us) at its "
          "default fetch.wait.max.ms=100 is 1,045 / 2,090 / 3,135, with "
          "fetch.wait.max.ms=0 5,000 / 10,000 / 15,000" in kmd,
          "kafka table: wake-up check line missing or wrong")

    # cgsum.py: two processes of a made-up implementation, one file per thread.
    d = os.path.join(tmp, "cg", "ksf")
    os.makedirs(d)

    def cgfile(path, thread, total, fns, qsort=0):
        lines = ["# callgrind format", "version: 1", "events: Ir", f"thread: {thread}",
                 "", f"summary: {total}", ""]
        for i, fn in enumerate(fns):
            lines += [f"fn=({i + 1}) {fn}", "1 10"]
        if qsort:
            lines += ["fn=(90) report", "1 5", "cfn=(91) qsort", "calls=1 10",
                      f"0 {qsort}", "fn=(91)", "1 3"]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
    cgfile(os.path.join(d, "client.run-01"), 1, 1_000_000 + 400_000, ["main_loop"],
           qsort=400_000)
    cgfile(os.path.join(d, "client.run-02"), 2, 3_000_000, ["reply_main", "deliver"])
    cgfile(os.path.join(d, "client.run-03"), 3, 500_000, ["0x0000000000108830"])
    cgfile(os.path.join(d, "client.run-04"), 4, 700_000, ["0x0000000000108830"])
    cgfile(os.path.join(d, "server.run-01"), 1, 200_000, ["main"])
    cgfile(os.path.join(d, "server.run-02"), 2, 2_000_000, ["worker_main"])
    cgfile(os.path.join(d, "server.run-03"), 3, 2_000_000, ["worker_main"])
    with open(os.path.join(d, "result.json"), "w") as f:
        f.write(json.dumps(client_line(1000.0, 900, 100.0, 1000)) + "\n")
    env = dict(os.environ, CG_JSON=os.path.join(tmp, "cgsum.json"))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "cgsum.py"),
                          os.path.join(tmp, "cg"), "1000", "64", "10", "", "ksf"],
                         check=True, capture_output=True, text=True, env=env).stdout
    got = json.load(open(env["CG_JSON"]))["ksf"]
    check(got == {"client": 5200.0, "server": 4200.0, "client_own": 4000.0,
                  "server_own": 4200.0},
          f"cgsum per request {got}, want client 5,200 (sort left out), server 4,200, "
          "own threads (all but librdkafka's) 4,000 and 4,200")
    check(re.search(r"\| client: librdkafka internal \(2 threads\) \| 1,200 \|", out),
          "cgsum: librdkafka's threads not summed as one line")
    check(re.search(r"\| server: worker_main \(2 threads\) \| 4,000 \|", out),
          "cgsum: worker threads not named and summed")
    check(re.search(r"\| client: main \(1 threads\) \| 1,000 \|", out),
          "cgsum: the main thread's qsort not left out")
    # Events (bench/callgrind --emit): no server process, so no server rows.
    e = os.path.join(tmp, "cge", "ksf")
    os.makedirs(e)
    cgfile(os.path.join(e, "client.run-01"), 1, 300_000, ["main_loop"])
    cgfile(os.path.join(e, "client.run-02"), 2, 5_000_000, ["dr_main"])
    with open(os.path.join(e, "result.json"), "w") as f:
        f.write(json.dumps(client_line(1000.0, 900, 100.0, 1000)) + "\n")
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "cgsum.py"),
                          os.path.join(tmp, "cge"), "1000", "64", "10", "", "ksf"],
                         check=True, capture_output=True, text=True).stdout
    check("Instructions per event" in out and "server" not in out
          and "| **client, whole process** | 5,300 |" in out,
          f"cgsum --emit table wrong:\n{out}")

    # legs.py (bench/legs): 300 made-up round trips, one at a time, with known legs:
    # request 150..152 us (by k % 3), server 2, reply 140, client 5 between a reply and
    # the next request. The first 100 are skipped.
    def legs_files(name, n, drop_server_receive=False):
        cl, sv, t = [], [], 1_000_000
        for k in range(n):
            cl.append(f"P {t}")
            t += 150 + k % 3
            if not (drop_server_receive and k == 7):
                sv.append(f"C {t}")
            t += 2
            sv.append(f"P {t}")
            t += 140
            cl.append(f"C {t}")
            t += 5
        paths = (os.path.join(tmp, name + ".client"), os.path.join(tmp, name + ".server"))
        for path, lines in zip(paths, (cl, sv)):
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
        return paths

    def legs_round(paths):
        out = subprocess.run([sys.executable, os.path.join(root, "bench", "legs.py"),
                              "round", paths[0], paths[1], "100"], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)
    got = legs_round(legs_files("good", 300))
    check(got == {"request": 151, "server": 2, "reply": 140, "client": 5,
                  "round_trip": 293, "count": 200},
          f"legs.py round {got}, want request 151, server 2, reply 140, client 5, "
          "round trip 293 over 200")
    got = legs_round(legs_files("short", 300, drop_server_receive=True))
    check("unequal counts" in got.get("error", "") and "[300, 299, 300, 300]"
          in got.get("error", ""), f"legs.py with a receipt missing: {got}, want an "
          "error naming the counts [300, 299, 300, 300]")
    lsrc = os.path.join(tmp, "legs.jsonl")
    with open(lsrc, "w") as f:
        for r, (req, srv) in enumerate([(150, 2), (170, 3), (160, 9)], 1):
            f.write(json.dumps({"impl": "floor", "round": r, "request": req,
                                "server": srv, "reply": 140, "client": 1,
                                "round_trip": req + srv + 140, "count": 200}) + "\n")
        f.write(json.dumps({"impl": "ksf", "round": 1, "error": "x"}) + "\n")
    lmd_path = os.path.join(tmp, "legs.md")
    subprocess.run([sys.executable, os.path.join(root, "bench", "legs.py"), "table",
                    lsrc, lmd_path, "setup line"], check=True, capture_output=True)
    lmd = open(lmd_path).read()
    check(lmd.startswith("setup line\n")
          and "| the server's own time: receive -> reply produced | 3 | - |" in lmd
          and "| request through the broker: client produce -> server receive | 160 | - |"
          in lmd and "| rounds used (of run) | 3 of 3 | 0 of 1 |" in lmd
          and "Left out: ksf round 1: x" in lmd,
          f"legs.py table wrong:\n{lmd}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("bench tables: ok")
