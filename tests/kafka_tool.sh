#!/usr/bin/env bash
# tests/kafka_tool.sh SOURCE_ROOT: `tools/dev kafka` (tools/kafka/, docs/kafka.md) against
# real Apache Kafka. Meson suite 'kafka-tool', left out of a plain `meson test` (it starts
# real clusters: about a minute on 2 cores); run it with
#   meson test -C build --suite kafka-tool --print-errorlogs
# Skipped (exit 77) when java, javac, mvn, kcat or python3 is missing, or when the jars
# are not cached and Maven Central cannot be reached.
#
# Cases: one node (first line, produce/consume, partitions, SIGTERM: exit 0, data removed,
# no JVM left); bad usage (exit 2); a node that cannot start or is not ready in time
# (exit 5 and its log); no java on PATH (exit 3 and the sentence); Maven Central
# unreachable (exit 4); three nodes (leaders spread, ISR 3, a node killed with SIGKILL and
# brought back by node-2.restart, then the tool itself SIGKILLed: no JVM left).
set -uo pipefail

root=${1:?usage: kafka_tool.sh SOURCE_ROOT}
dev=$root/tools/dev
tmp=$(mktemp -d /tmp/ksf-kafka-tool-test.XXXXXX)
tool_pid=""
failures=0

cleanup() {
    [[ -n $tool_pid ]] && kill -KILL "$tool_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

skip() {
    echo "SKIP: $*"
    exit 77
}
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
# check DESCRIPTION EXPECTED ACTUAL
check() {
    if [[ $2 == "$3" ]]; then
        echo "ok: $1"
    else
        fail "$1: expected '$2', got '$3'"
    fi
}
die() {
    echo "FAIL: $*"
    for f in "$tmp"/*.err; do
        [[ -f $f ]] && { echo "--- $f"; tail -n 30 "$f"; }
    done
    exit 1
}

for c in java javac mvn kcat python3 setpriv; do
    command -v "$c" >/dev/null || skip "$c is not installed (tools/dev deps installs it)"
done
timeout 300 "$dev" kafka --fetch-only >"$tmp/fetch.out" 2>"$tmp/fetch.err"
case $? in
0) ;;
3 | 4) skip "tools/dev kafka --fetch-only: $(tail -n 1 "$tmp/fetch.err")" ;;
*) die "tools/dev kafka --fetch-only failed: $(cat "$tmp/fetch.err")" ;;
esac

# start NAME ARGS...: runs `tools/dev kafka ARGS` in the background (stdout NAME.out,
# stderr NAME.err) and waits for its first stdout line; sets tool_pid and addr.
start() {
    local name=$1 deadline=$((SECONDS + 120))
    shift
    "$dev" kafka "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    tool_pid=$!
    until [[ $(wc -l <"$tmp/$name.out") -ge 1 ]]; do
        kill -0 "$tool_pid" 2>/dev/null || die "tools/dev kafka $* exited before printing an address"
        ((SECONDS < deadline)) || die "tools/dev kafka $* printed no address within 120 s"
        sleep 0.1
    done
    addr=$(head -n 1 "$tmp/$name.out")
}

# wait_exit PID SECONDS: the tool's exit status (it is this shell's child), or 255 after
# SECONDS.
wait_exit() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || return 255
        sleep 0.1
    done
    wait "$1"
}

# jvms DATA: this run's JVMs (every one carries -Dksf.kafka.run=DATA).
jvms() { pgrep -f -- "-Dksf.kafka.run=$1( |$)" | tr '\n' ' '; }

# ---- one node --------------------------------------------------------------------
t0=$SECONDS
start one --topic t:3 --state-dir "$tmp/one-state"
echo "one node: address $addr after $((SECONDS - t0)) s"
[[ $addr =~ ^127\.0\.0\.1:[0-9]{4,5}$ ]] || fail "first line is not one host:port: '$addr'"
check "node-1.address is the printed address" "$addr" "$(cat "$tmp/one-state/node-1.address")"
data=$(cat "$tmp/one-state/data-dir")
check "node-1.pid names a JVM of this run" "$(cat "$tmp/one-state/node-1.pid") " "$(jvms "$data")"

# The node maps the class-data archive that --fetch-only made (docs/kafka.md: it halves
# the start-up CPU): -Xshare:on fails unless it fits the node's JVM and class path.
cmdline=$(tr '\0' '\n' <"/proc/$(cat "$tmp/one-state/node-1.pid")/cmdline")
archive=$(sed -n 's/^-XX:SharedArchiveFile=//p' <<<"$cmdline")
classpath=$(grep -A1 -x -- -cp <<<"$cmdline" | tail -n 1)
[[ -n $archive ]] || fail "node 1 runs without -XX:SharedArchiveFile"
bash -c '"$@"; exit $?' _ java "-XX:SharedArchiveFile=$archive" -Xshare:on -cp "$classpath" \
    KsfKafkaReady >/dev/null 2>&1
check "the node's class-data archive maps (KsfKafkaReady's usage exit)" 2 $?

msg="hello-$RANDOM-$$"
printf '%s\n' "$msg" | timeout 30 kcat -P -b "$addr" -t t -p 1 -X acks=all ||
    fail "kcat could not produce to t"
check "the message comes back from t[1]" "$msg" \
    "$(timeout 30 kcat -C -b "$addr" -t t -p 1 -o beginning -c 1 -e -q)"
check "topic t has 3 partitions" '  topic "t" with 3 partitions:' \
    "$(timeout 30 kcat -L -b "$addr" -t t | grep '^  topic ')"
# An auto-created topic gets num.partitions=4 (the embedded broker's default).
printf 'x\n' | timeout 30 kcat -P -b "$addr" -t auto.created -X acks=all ||
    fail "kcat could not produce to auto.created"
check "an auto-created topic has 4 partitions" '  topic "auto.created" with 4 partitions:' \
    "$(timeout 30 kcat -L -b "$addr" -t auto.created | grep '^  topic ')"

kill -TERM "$tool_pid"
wait_exit "$tool_pid" 30
check "exit status after SIGTERM" 0 $?
tool_pid=""
check "the temporary data directory is removed" "no" "$([[ -e $data ]] && echo yes || echo no)"
check "no JVM of the run is left" "" "$(jvms "$data")"
check "node-1.pid is removed" "no" "$([[ -e $tmp/one-state/node-1.pid ]] && echo yes || echo no)"
check "stderr holds the ready line only (lines, ready lines)" "1 1" \
    "$(wc -l <"$tmp/one.err") $(grep -c '^dev kafka: 1 node(s) of Kafka 4.4.0 ready in [0-9.]* s at ' "$tmp/one.err")"

# ---- bad usage, a node that cannot start, no java -------------------------------------
timeout 90 "$dev" kafka --nodes 2 >"$tmp/usage.out" 2>"$tmp/usage.err"
check "--nodes 2: exit status" 2 $?
check "--nodes 2: the complaint" "dev kafka: --nodes must be 1 or 3, not '2'" \
    "$(head -n 1 "$tmp/usage.err")"
check "--nodes 2: nothing on stdout" "" "$(cat "$tmp/usage.out")"

KSF_KAFKA_START_TIMEOUT=60 timeout 90 "$dev" kafka --set num.partitions=many --state-dir "$tmp/bad-state" \
    >"$tmp/bad.out" 2>"$tmp/bad.err"
check "a node that cannot start: exit status" 5 $?
check "a node that cannot start: nothing on stdout" "" "$(cat "$tmp/bad.out")"
grep -q "^dev kafka: node 1 exited with status 1 while starting" "$tmp/bad.err" ||
    fail "a node that cannot start: no 'node 1 exited' line on stderr: $(cat "$tmp/bad.err")"
grep -q "num.partitions" "$tmp/bad.err" ||
    fail "a node that cannot start: the log's end (naming num.partitions) is not on stderr"

KSF_KAFKA_START_TIMEOUT=1 timeout 90 "$dev" kafka >"$tmp/slow.out" 2>"$tmp/slow.err"
check "not ready in time: exit status" 5 $?
check "not ready in time: the sentence" \
    "dev kafka: the cluster was not ready within 1s (KSF_KAFKA_START_TIMEOUT)" \
    "$(tail -n 1 "$tmp/slow.err")"
# The node's log may still be empty after 1 s on a loaded machine; its tail's header is not.
grep -q '^dev kafka: the last 40 lines of .*/state/node-1\.log:$' "$tmp/slow.err" ||
    fail "not ready in time: the end of node-1.log is not offered on stderr"

mkdir "$tmp/bin"
for d in /usr/local/bin /usr/bin /bin; do
    for f in "$d"/*; do
        b=${f##*/}
        case $b in java | javac | jar | mvn) continue ;; esac
        [[ -e $tmp/bin/$b ]] || ln -s "$f" "$tmp/bin/$b"
    done
done
PATH=$tmp/bin timeout 90 "$dev" kafka --topic t:1 >"$tmp/nojava.out" 2>"$tmp/nojava.err"
check "no java: exit status" 3 $?
check "no java: the sentence" "dev kafka: java was not found on PATH; Kafka 4.4.0 needs a Java 17 or newer runtime and JDK (tools/dev deps installs it)." \
    "$(cat "$tmp/nojava.err")"
check "no java: nothing on stdout" "" "$(cat "$tmp/nojava.out")"

# Maven Central unreachable: an empty cache, an empty local repository (user.home) and a
# mirror on a closed port, so both the offline and the online attempt fail.
mkdir -p "$tmp/home/.m2"
cat >"$tmp/home/.m2/settings.xml" <<'EOF'
<settings><mirrors><mirror><id>closed</id><mirrorOf>*</mirrorOf>
<url>http://127.0.0.1:9/</url></mirror></mirrors></settings>
EOF
MAVEN_OPTS="-Duser.home=$tmp/home" KSF_CACHE_DIR=$tmp/cache timeout 300 "$dev" kafka \
    >"$tmp/offline.out" 2>"$tmp/offline.err"
check "no registry: exit status" 4 $?
check "no registry: the sentence" "dev kafka: could not download the Kafka 4.4.0 jars from Maven Central (mvn exit 1); is the registry reachable? mvn's output is in $tmp/cache/kafka-4.4.0-mvn.log." \
    "$(tail -n 1 "$tmp/offline.err")"
check "no registry: no half-written cache is left" "kafka-4.4.0-mvn.log" "$(ls -A "$tmp/cache")"

# ---- three nodes ---------------------------------------------------------------------
t0=$SECONDS
start three --nodes 3 --topic t3:3 --state-dir "$tmp/three-state"
echo "three nodes: address $addr after $((SECONDS - t0)) s"
[[ $addr =~ ^127\.0\.0\.1:[0-9]{4,5},127\.0\.0\.1:[0-9]{4,5},127\.0\.0\.1:[0-9]{4,5}$ ]] ||
    fail "first line is not three host:port: '$addr'"
check "the printed address lists node-1..3.address" "$addr" \
    "$(cat "$tmp/three-state/node-1.address" "$tmp/three-state/node-2.address" \
        "$tmp/three-state/node-3.address" | paste -sd,)"
check "three distinct ports" 3 "$(tr ',' '\n' <<<"$addr" | sort -u | wc -l)"
data=$(cat "$tmp/three-state/data-dir")
meta=$(timeout 30 kcat -L -b "$addr" -t t3)
check "3 brokers" " 3 brokers:" "$(grep '^ [0-9]* brokers:' <<<"$meta")"
check "partition leaders are spread over the nodes" "1 2 3" \
    "$(sed -n 's/^ *partition [0-9]*, leader \([0-9]*\),.*/\1/p' <<<"$meta" | sort -n | paste -sd' ')"
check "every partition's ISR has 3 nodes" "3 3 3" \
    "$(sed -n 's/.*isrs: //p' <<<"$meta" | awk -F, '{print NF}' | paste -sd' ')"
msg="three-$RANDOM-$$"
printf '%s\n' "$msg" | timeout 30 kcat -P -b "$addr" -t t3 -p 0 -X acks=all ||
    fail "kcat could not produce to t3 with acks=all"

# Failover: node 2 killed with SIGKILL, relaunched by its restart script.
old=$(cat "$tmp/three-state/node-2.pid")
kill -KILL "$old"
timeout 90 "$tmp/three-state/node-2.restart" --wait
check "node-2.restart --wait: exit status" 0 $?
new=$(cat "$tmp/three-state/node-2.pid")
[[ $new != "$old" ]] || fail "node-2.pid still names the killed JVM $old"
check "node 2 answers on its old address" " 3 brokers:" \
    "$(timeout 30 kcat -L -b "$(cat "$tmp/three-state/node-2.address")" | grep '^ [0-9]* brokers:')"
check "the message survived the restart" "$msg" \
    "$(timeout 30 kcat -C -b "$addr" -t t3 -p 0 -o beginning -c 1 -e -q)"
check "three JVMs in the run" 3 "$(jvms "$data" | wc -w)"

# The tool itself killed with SIGKILL: its nodes must still die.
kill -KILL "$tool_pid"
wait "$tool_pid" 2>/dev/null
tool_pid=""
deadline=$((SECONDS + 5))
while [[ -n $(jvms "$data") ]] && ((SECONDS < deadline)); do sleep 0.1; done
check "no JVM left within 5 s of SIGKILL to the tool" "" "$(jvms "$data")"
rm -rf "$data" # a later run would sweep it; do not wait for one

if ((failures)); then
    echo "$failures check(s) failed"
    for f in "$tmp"/*.err; do echo "--- $f"; tail -n 20 "$f"; done
    exit 1
fi
echo "all checks passed"
