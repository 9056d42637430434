#!/usr/bin/env bash
# NestJS interoperability, both directions, on a fresh embedded broker (or on the real
# Kafka of KSF_TEST_KAFKA=host:port, tests/support/broker.h):
#   1. C -> NestJS: interop_client calls nest_service.mjs's handler matrix and emits an event;
#   2. NestJS -> C: nest_client.mjs (a NestJS ClientKafka) calls interop_server's matrix;
#   3. one reply group shared by a NestJS ClientKafka (mixed_client.mjs) and a ksf client
#      (ksf bench), both sending at once: every request of both must get its reply.
# Usage: run.sh KSF_TOOL INTEROP_CLIENT INTEROP_SERVER
# Exit 0: all passed; 1: a check failed; 77 (meson: skipped) when node or the pinned npm
# packages are missing, saying so. `npm ci` in tests/interop installs them (tools/dev deps).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ksf=$1 c_client=$2 c_server=$3

if ! command -v node >/dev/null; then
    echo "skipped: node not found (install nodejs to run the NestJS interop tests)"
    exit 77
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
    echo "skipped: node $(node --version) is too old; NestJS 12 needs node >= 20"
    exit 77
fi
if [[ ! -d $here/node_modules/@nestjs/microservices ]]; then
    echo "skipped: NestJS packages not installed (run: npm ci --prefix tests/interop)"
    exit 77
fi

name=interop
# shellcheck source=tests/interop/procs.sh
source "$here/procs.sh"

# Every topic the checks use exists from the start: a topic auto-created mid-run changes
# the metadata the NestJS consumers watch, and kafkajs answers that with a rebalance,
# after which it redelivers the rest of its current batch (a streamed value twice).
patterns=(object array string number null echo rpc-string rpc-object plain-error stream
    stream-sync async context meta event guarded)
topics=()
for p in "${patterns[@]}"; do topics+=(--topic "interop.$p" --topic "interop.$p.reply"); done
if [[ -n ${KSF_TEST_KAFKA:-} ]]; then
    # Real Kafka (tools/dev kafka): a Metadata request naming a topic auto-creates it
    # with the broker's num.partitions (4 there, as on the embedded broker).
    broker=$KSF_TEST_KAFKA
    command -v kcat >/dev/null || fail "kcat is needed to create the topics on real Kafka"
    for ((i = 1; i < ${#topics[@]}; i += 2)); do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kcat -b "$broker" -L -t "${topics[i]}" 2>/dev/null | grep -q 'partition 3,' && break
            sleep 0.2
        done
    done
    echo "# real Kafka at $broker"
else
    "$ksf" broker "${topics[@]}" >"$tmp/broker.out" 2>"$tmp/broker.log" &
    pids+=($!)
    # Bounded at 60 s, not 10: on a loaded 2-core machine (the whole suite beside it)
    # creating the 34 topics took longer than 10 s twice. wait_for returns as soon as
    # the address is printed, or at once when the broker exits.
    if ! wait_for "$tmp/broker.out" '^127\.0\.0\.1:' 60 "${pids[-1]}"; then
        kill -0 "${pids[-1]}" 2>/dev/null && fail "ksf broker printed no address within 60 s"
        fail "ksf broker exited before printing its address (its log is below)"
    fi
    broker=$(head -n1 "$tmp/broker.out")
    echo "# embedded broker at $broker"
fi

echo "# 1. C client -> NestJS service (t=${SECONDS}s)"
start_ready "NestJS service" "$tmp/nest_service.log" 'nest service ready' 60 \
    env KSF_INTEROP_EVENT_LOG="$tmp/events.jsonl" node "$here/nest_service.mjs" "$broker"
echo "# NestJS service ready (t=${SECONDS}s)"
"$c_client" "$broker" "$tmp/events.jsonl" | tee "$tmp/c_client.out"
c_rc=${PIPESTATUS[0]}
# The NestJS service leaves before the ksf server starts: it consumes the same request
# topics in its own group, so while it runs it answers every request too, and the
# NestJS client would take whichever answer came first.
kill -TERM "${pids[-1]}" 2>/dev/null
wait "${pids[-1]}" 2>/dev/null
unset 'pids[-1]'

echo "# 2. NestJS client -> C service (t=${SECONDS}s)"
start_ready "ksf interop server" "$tmp/c_server.log" 'ksf interop server ready' 60 \
    "$c_server" "$broker"
echo "# ksf server ready (t=${SECONDS}s)"
node "$here/nest_client.mjs" "$broker" | tee "$tmp/nest_client.out"
n_rc=${PIPESTATUS[0]}

echo "# 3. a NestJS client and a ksf client in one reply group (t=${SECONDS}s)"
node "$here/mixed_client.mjs" "$broker" interop-mixed 20 >"$tmp/mixed.out" 2>&1 &
mixed_pid=$!
pids+=("$mixed_pid")
wait_for "$tmp/mixed.out" 'nest mixed client ready' 60 "$mixed_pid" ||
    fail "the NestJS mixed-group client did not connect"
"$ksf" bench interop.echo '{"from":"ksf"}' --duration 10 --concurrency 4 \
    --brokers "$broker" --timeout-ms 20000 --set group.id=interop-mixed \
    --set consumer.fetch.wait.max.ms=5 --set consumer.session.timeout.ms=6000 \
    --set consumer.heartbeat.interval.ms=500 >"$tmp/mixed_bench.out" 2>"$tmp/mixed_bench.log"
b_rc=$?
wait "$mixed_pid"
m_rc=$?
cat "$tmp/mixed.out"
echo "ksf client in the same group (ksf bench, exit $b_rc):"
tail -n 4 "$tmp/mixed_bench.out"
if ((b_rc == 0)); then echo "1 passed, 0 failed" >"$tmp/mixed_ksf.out"; else
    echo "0 passed, 1 failed" >"$tmp/mixed_ksf.out"; fi

sum_results "$tmp/c_client.out" "$tmp/nest_client.out" "$tmp/mixed.out" "$tmp/mixed_ksf.out"
echo "# done (t=${SECONDS}s)"
echo "interop: $passed passed, $failed failed"
((c_rc == 0 && n_rc == 0 && m_rc == 0 && b_rc == 0 && failed == 0)) ||
    fail "see the failures above"
