#!/usr/bin/env bash
# tools/kafka/kafka.sh: `tools/dev kafka`, a real Apache Kafka (pinned, KRaft) on 127.0.0.1
# for development and tests. docs/kafka.md is the manual; `--help` the summary.
#
# How it works, in order:
#  1. The jars: tools/kafka/pom.xml's runtime dependencies, copied by Maven into a cache
#     outside the tree (KSF_CACHE_DIR, default ~/.cache/ksf) and marked complete only once
#     all are there; KsfKafkaReady.java is compiled next to them.
#  2. Two ports per node below the kernel's ephemeral range (so no outgoing connection
#     takes one before the broker binds it), each held with flock for the run, so two
#     runs at once never pick the same.
#  3. One server.properties per node (every node is broker and controller); each node's JVM
#     formats its data directory and starts; the readiness check runs beside them.
#  4. The bootstrap servers on stdout once the check passed; then this script waits for
#     SIGINT/SIGTERM, and for restart requests from node-<id>.restart on a FIFO.
# Every JVM is this script's child and runs under `setpriv --pdeathsig KILL`: the kernel
# kills it when this script dies, however it dies (SIGKILL included), so no JVM outlives
# a run. That is also why node-<id>.restart asks this script to relaunch the node rather
# than starting the JVM itself.
set -uo pipefail

KAFKA_VERSION=4.4.0 # with tools/kafka/pom.xml
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${KSF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ksf}
cache=$cache_root/kafka-$KAFKA_VERSION
heap=${KSF_KAFKA_HEAP:-512m}
start_timeout=${KSF_KAFKA_START_TIMEOUT:-60}
stop_timeout=${KSF_KAFKA_STOP_TIMEOUT:-}
# The nodes' log lines that also go to stderr: none by default, since a starting cluster
# logs ERRORs that are part of its normal start (NotControllerException while the
# controllers elect one); a node that fails to start gets the end of its log shown.
stderr_level=${KSF_KAFKA_STDERR_LEVEL:-OFF}
tmp_root=${TMPDIR:-/tmp}

usage() {
    cat <<EOF
usage: tools/dev kafka [--nodes 1|3] [--topic NAME:PARTITIONS]... [--state-dir DIR]
                       [--data-dir DIR] [--set KEY=VALUE]...
       tools/dev kafka --fetch-only

Starts Apache Kafka $KAFKA_VERSION (KRaft; every node is broker and controller) on
127.0.0.1 with free ports. Once the cluster answers and the topics exist, prints its
bootstrap servers (host:port,...) as the first line on stdout, then runs until SIGINT or
SIGTERM, stops every node, removes its temporary data and exits 0. The nodes log to the
state directory (node-<id>.log), not to the terminal.

  --nodes N          1 (default) or 3; 3 nodes replicate everything 3 times (min ISR 2)
  --topic NAME:P     create topic NAME with P partitions before printing the address
                     (replication factor: the number of nodes); repeatable
  --state-dir DIR    where node-<id>.{pid,address,restart,log,properties} go (default:
                     state/ in the data directory); node-<id>.restart relaunches a node
                     on the same ports and data (--wait: until it has started)
  --data-dir DIR     keep the nodes' data in DIR and leave it there after exit (default:
                     a temporary directory, removed on exit); a later run with the same
                     DIR and --nodes continues with its topics and messages
  --set KEY=VALUE    an extra server.properties line for every node, after (so winning
                     over) the tool's own settings (docs/kafka.md); repeatable
  --fetch-only       download the jars into the cache, start a node once for its
                     class-data archive if there is none, and exit (tools/dev deps does)

Environment: KSF_CACHE_DIR (jar cache; default \$XDG_CACHE_HOME/ksf or ~/.cache/ksf),
KSF_KAFKA_HEAP (-Xmx of each node; default 512m), KSF_KAFKA_START_TIMEOUT (seconds;
default 60), KSF_KAFKA_STOP_TIMEOUT (seconds from SIGTERM to SIGKILL; default 3, or 10
with --data-dir), KSF_KAFKA_STDERR_LEVEL (log4j level of the node log lines also copied
to stderr; default OFF).

Exit status: 0 stopped by SIGINT/SIGTERM (or --fetch-only done); 1 internal error;
2 bad usage; 3 java, javac, jar, mvn, setpriv or python3 missing (tools/dev deps installs
them); 4 the jars could not be downloaded from Maven Central; 5 the cluster did not
start (a node exited, or not ready within KSF_KAFKA_START_TIMEOUT; the end of the node
logs is on stderr).
EOF
}

say() { printf 'dev kafka: %s\n' "$*" >&2; }
fail() {
    local code=$1
    shift
    say "$*"
    exit "$code"
}
bad_usage() {
    say "$*"
    say "usage: tools/dev kafka [--nodes 1|3] [--topic NAME:PARTITIONS]... [--state-dir DIR] [--data-dir DIR] [--set KEY=VALUE]... (--help says more)"
    exit 2
}

# ---- arguments -----------------------------------------------------------------------

nodes=1
topics=()
sets=()
state=""
data=""
keep_data=0
fetch_only=0
while (($#)); do
    opt=$1 val=""
    case $opt in
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        ;;
    --nodes | --topic | --state-dir | --data-dir | --set)
        (($# >= 2)) || bad_usage "$opt needs a value"
        val=$2
        shift
        ;;
    esac
    case $opt in
    --nodes)
        [[ $val == 1 || $val == 3 ]] || bad_usage "--nodes must be 1 or 3, not '$val'"
        nodes=$val
        ;;
    --topic)
        [[ $val =~ ^([A-Za-z0-9._-]{1,249}):([1-9][0-9]{0,4})$ ]] ||
            bad_usage "--topic takes NAME:PARTITIONS (NAME of letters, digits, '.', '_', '-'; PARTITIONS from 1), not '$val'"
        topics+=("$val")
        ;;
    --state-dir)
        [[ -n $val ]] || bad_usage "--state-dir needs a directory"
        state=$val
        ;;
    --data-dir)
        [[ -n $val ]] || bad_usage "--data-dir needs a directory"
        data=$val
        keep_data=1
        ;;
    --set)
        [[ $val =~ ^[A-Za-z0-9._-]+=.*$ && $val != *$'\n'* ]] ||
            bad_usage "--set takes KEY=VALUE (one server.properties line), not '$val'"
        sets+=("$val")
        ;;
    --fetch-only) fetch_only=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) bad_usage "unknown argument '$1'" ;;
    esac
    shift
done

# How long a node may take to stop after SIGTERM. Nodes that stop together can wait for
# a controller quorum that is stopping too (a 3-node cluster took 1 s to over 15 s here),
# which only matters when the data is kept.
if [[ -z $stop_timeout ]]; then
    stop_timeout=3
    ((keep_data)) && stop_timeout=10
fi
[[ $stop_timeout =~ ^[0-9]+$ ]] || bad_usage "KSF_KAFKA_STOP_TIMEOUT must be a number of seconds, not '$stop_timeout'"
[[ $start_timeout =~ ^[1-9][0-9]*$ ]] || bad_usage "KSF_KAFKA_START_TIMEOUT must be a number of seconds, not '$start_timeout'"

# ---- processes: tracking and stopping ------------------------------------------------

cds_training=""  # the class-data archive a node writes at exit (launch_node)
cds_trainer=""   # the node writing it
child=""         # a step (mvn, javac, the readiness check) run in the background
declare -A npid  # node id -> pid of its JVM
declare -A gone  # node id -> 1 once its exit was reported
run_marker=""    # -Dksf.kafka.run=<data dir>: names this run's JVMs (pgrep -f finds them)
state_owned=0    # 1 once this run holds the state directory's lock: cleanup may touch it

# alive PID: the process exists and is not a zombie.
alive() {
    local s
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    s=$(</proc/"$1"/stat) 2>/dev/null || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z ]]
}

# ours PID: a live JVM of this run (a pid file may name a pid reused since).
ours() {
    alive "$1" && tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$run_marker"
}

# wait_gone SECONDS PID...: succeeds once none of the PIDs is alive, fails if one
# still is after SECONDS (stop_pids waits so after SIGTERM and again after SIGKILL).
wait_gone() {
    local p left deadline=$((SECONDS + $1))
    shift
    while ((SECONDS < deadline)); do
        left=0
        for p; do alive "$p" && left=1; done
        ((left)) || return 0
        sleep 0.1
    done
    return 1
}

# stop_pids PID...: SIGTERM, then SIGKILL for whatever is left after stop_timeout (at
# least 60 s for a node writing the class-data archive, which takes seconds). The pids
# that needed SIGKILL are added to `killed`.
killed=" "
stop_pids() {
    local p bound=$stop_timeout
    (($#)) || return 0
    for p; do
        [[ -n $cds_training && $p == "${npid[$cds_trainer]:-}" ]] && ((bound < 60)) && bound=60
    done
    kill -TERM "$@" 2>/dev/null
    wait_gone "$bound" "$@" && return 0
    for p; do
        if alive "$p"; then
            ((keep_data)) && say "pid $p did not stop within ${bound}s of SIGTERM; sending SIGKILL"
            kill -KILL "$p" 2>/dev/null
            killed+="$p "
        fi
    done
    wait_gone 5 "$@" || true
}

cleanup() {
    local rc=$? i p pids=()
    trap '' INT TERM
    [[ -n $child ]] && kill -TERM "$child" 2>/dev/null
    if ((state_owned)); then
        for ((i = 1; i <= nodes; i++)); do
            p=${npid[$i]:-}
            [[ -f $state/node-$i.pid ]] && p=$(<"$state/node-$i.pid")
            ours "$p" && pids+=("$p")
            [[ -n ${npid[$i]:-} && ${npid[$i]} != "$p" ]] && ours "${npid[$i]}" && pids+=("${npid[$i]}")
        done
        stop_pids "${pids[@]}"
        save_cds
        for ((i = 1; i <= nodes; i++)); do
            rm -f "$state/node-$i.pid" "$state/node-$i.ack" "$state/node-$i.ack.tmp"
        done
        rm -f "$state/control" "$state/bootstrap"
    fi
    if [[ -n $data && $keep_data == 0 ]]; then
        rm -rf "$data"
    fi
    exit "$rc"
}

# SIGINT/SIGTERM: exit at once while starting; in the main loop only raise a flag that
# the loop checks after its `read -t` returned. Exiting from a trap that interrupted
# `read -t` left bash's timeout alarm armed, and it crashed bash (SIGSEGV, bash 5.2) in
# the middle of the cleanup when that alarm fired.
in_main_loop=0
stopping=0
on_signal() {
    ((in_main_loop)) || exit 0
    stopping=1
}

# run_bg CMD...: runs CMD as a child and waits for it, so that a signal is handled at
# once (bash runs traps only between foreground commands). Returns CMD's status.
run_bg() {
    local rc
    "$@" &
    child=$!
    wait "$child"
    rc=$?
    child=""
    return "$rc"
}

# ---- the jars ------------------------------------------------------------------------

need() {
    command -v "$1" >/dev/null 2>&1 ||
        fail 3 "$1 was not found on PATH; Kafka $KAFKA_VERSION needs $2 (tools/dev deps installs it)."
}

check_java() {
    need java "a Java 17 or newer runtime and JDK"
    need javac "a Java 17 or newer JDK (javac compiles its readiness check)"
    # The version from the JDK's release file: asking `java -version` costs a JVM start.
    local bin home v=""
    bin=$(readlink -f "$(command -v java)")
    home=${bin%/bin/java}
    if [[ -f $home/release ]]; then
        java_version=$(sed -n 's/^JAVA_VERSION="\(.*\)"$/\1/p' "$home/release")
    fi
    if [[ -z ${java_version:-} ]]; then
        java_version=$(java -XshowSettings:properties -version 2>&1 |
            sed -n 's/^ *java\.version = //p')
    fi
    v=${java_version%%[.+-]*}
    [[ $v =~ ^[0-9]+$ ]] || v=0
    ((v >= 17)) || fail 3 "java is version ${java_version:-unknown}; Kafka $KAFKA_VERSION needs Java 17 or newer (tools/dev deps installs default-jdk-headless)."
    java_bin=$bin
    command -v setpriv >/dev/null 2>&1 ||
        fail 3 "setpriv (util-linux) was not found on PATH; it ties each broker's life to this tool's."
}

pom_hash() { sha256sum "$here/pom.xml" | cut -d' ' -f1; }

jars_complete() {
    [[ -f $cache/COMPLETE && $(<"$cache/COMPLETE") == "$(pom_hash)" ]]
}

# mvn_copy DIR OFFLINE(0|1) LOG: the pom's runtime jars into DIR.
mvn_copy() {
    local offline=()
    (($2)) && offline=(-o)
    # Never hang: batch mode, a bound on the whole download, and no prompts.
    run_bg setpriv --pdeathsig TERM -- timeout 300 mvn -B -q "${offline[@]}" \
        -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$1" </dev/null >"$3" 2>&1
}

# Fills the cache if it is not complete. A download goes to a fresh directory that is
# renamed into place only when complete, so an interrupted one is never taken for a
# complete one (and two runs at once do not share a half-written directory).
ensure_jars() {
    jars_complete && return 0
    need mvn "Maven to download its jars into $cache (once)"
    mkdir -p "$cache_root" || fail 1 "cannot create the cache directory $cache_root"
    local tmp log=$cache_root/kafka-$KAFKA_VERSION-mvn.log rc
    tmp=$(mktemp -d "$cache_root/.kafka-$KAFKA_VERSION.XXXXXX") || fail 1 "cannot write to $cache_root"
    # Offline first: ~/.m2 may hold the jars already (an earlier build, another checkout).
    if ! mvn_copy "$tmp/libs" 1 "$log"; then
        rm -rf "$tmp/libs"
        say "downloading the Kafka $KAFKA_VERSION jars from Maven Central into $cache (once, about 45 MB)"
        mvn_copy "$tmp/libs" 0 "$log"
        rc=$?
        if ((rc != 0)); then
            rm -rf "$tmp"
            local why="mvn exit $rc"
            ((rc == 124)) && why="mvn timed out after 300 s"
            fail 4 "could not download the Kafka $KAFKA_VERSION jars from Maven Central ($why); is the registry reachable? mvn's output is in $log."
        fi
    fi
    ls "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null 2>&1 ||
        { rm -rf "$tmp"; fail 4 "mvn left no kafka_2.13-$KAFKA_VERSION.jar in the cache; mvn's output is in $log."; }
    pom_hash >"$tmp/COMPLETE"
    if [[ -e $cache ]]; then
        # A stale cache (older pom): move it aside, then put ours in its place.
        local old
        old=$(mktemp -u "$cache_root/.stale.XXXXXX")
        mv -T "$cache" "$old" 2>/dev/null && rm -rf "$old"
    fi
    if ! mv -T "$tmp" "$cache" 2>/dev/null; then
        rm -rf "$tmp" # another run installed it at the same time
        jars_complete || fail 1 "could not install the jars into $cache"
    fi
}

# KsfKafkaReady.java (the readiness check, and the nodes' main class), compiled once per
# source into a jar: class data sharing (launch_node) takes jars only, no directories.
ensure_helper() {
    local sum tmp
    sum=$(cat "$here/KsfKafkaReady.java" "$cache/COMPLETE" | sha256sum | cut -c1-16)
    helper_jar=$cache/ksf-kafka-ready-$sum.jar
    # The class-data archive (launch_node) is only valid for the JVM that wrote it and the
    # same class path, which names the helper's jar.
    cds=$cache/cds-$(printf '%s %s %s' "$java_bin" "$java_version" "$helper_jar" |
        sha256sum | cut -c1-16).jsa
    [[ -f $helper_jar ]] && return 0
    need jar "a Java 17 or newer JDK (jar packs its readiness check)"
    tmp=$(mktemp -d "$cache/.ready.XXXXXX") || fail 1 "cannot write to $cache"
    if ! run_bg javac -nowarn -d "$tmp/classes" -cp "$cache/libs/*" \
        "$here/KsfKafkaReady.java" >"$tmp/javac.log" 2>&1 ||
        ! run_bg jar --create --file "$tmp/ready.jar" -C "$tmp/classes" . >>"$tmp/javac.log" 2>&1; then
        cat "$tmp/javac.log" >&2
        rm -rf "$tmp"
        fail 1 "could not compile $here/KsfKafkaReady.java against the jars in $cache (output above)"
    fi
    mv -f "$tmp/ready.jar" "$helper_jar"
    rm -rf "$tmp"
}

# ---- directories and ports -----------------------------------------------------------

# proc_start PID: the process's start time (in ticks since boot), to tell a reused pid.
proc_start() {
    local s
    s=$(</proc/"$1"/stat) 2>/dev/null || return 1
    s=${s##*) }
    set -- $s
    printf '%s\n' "${20}"
}

# Temporary data directories of runs that were killed (SIGKILL leaves no time to
# remove them): the owner named in .owner is gone.
sweep_stale() {
    local d pid start
    for d in "$tmp_root"/ksf-kafka.*; do
        [[ -f $d/.owner ]] || continue
        read -r pid start <"$d/.owner" 2>/dev/null || continue
        [[ $(proc_start "$pid" 2>/dev/null) == "$start" ]] && continue
        rm -rf "$d"
    done
}

# lock_file FILE: holds an exclusive lock on FILE until this script exits; false when
# another process holds it.
lock_file() {
    local fd
    exec {fd}>>"$1" || return 1
    if ! flock -n "$fd"; then
        exec {fd}>&-
        return 1
    fi
}

# Ports below the ephemeral range are never handed to an outgoing connection, so one that
# is free now stays free until the broker binds it, unless another program binds it on
# purpose; another run of this tool cannot, because of the lock.
pick_ports() {
    local want=$1 lo=20000 hi eph_lo eph_hi got=() p tries
    read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range || { eph_lo=32768 eph_hi=60999; }
    hi=$((eph_lo - 1))
    if ((hi - lo < 1000)); then
        lo=$((eph_hi + 1)) hi=65535
        ((hi - lo < 1000)) && lo=10000 hi=65535
    fi
    mkdir -p "$tmp_root/ksf-kafka-ports" || fail 1 "cannot create $tmp_root/ksf-kafka-ports"
    for ((tries = 0; tries < 5 && ${#got[@]} < want; tries++)); do
        for p in $(python3 - "$((want * 3))" "$lo" "$hi" <<'EOF'
import random, socket, sys
n, lo, hi = (int(a) for a in sys.argv[1:4])
found, tried = [], set()
while len(found) < n and len(tried) < (hi - lo + 1):
    p = random.randint(lo, hi)
    if p in tried:
        continue
    tried.add(p)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
        found.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, found)))
EOF
        ); do
            ((${#got[@]} < want)) || break
            lock_file "$tmp_root/ksf-kafka-ports/$p" && got+=("$p")
        done
    done
    ((${#got[@]} == want)) || fail 1 "could not find $want free ports on 127.0.0.1 between $lo and $hi"
    ports=("${got[@]}")
}

# ---- nodes ---------------------------------------------------------------------------

jvm_opts() {
    local i=$1
    printf '%s\n' "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dlog4j2.statusLoggerLevel=ERROR \
        "-Dksf.stderr.level=$stderr_level" \
        "-Dlog4j2.configurationFile=$here/log4j2.properties" \
        "-Dksf.log.file=$state/node-$i.log" "-Dksf.log.name=node $i" "$run_marker"
}

# launch_node ID: starts the node's JVM as a child of this script (see the top). The JVM
# formats the node's data directory first when it has none (KsfKafkaReady node).
#
# Class data sharing: the first node that starts without an archive writes one when it
# exits (-XX:ArchiveClassesAtExit, about 50 MB in the cache); every later JVM maps the
# classes it lists instead of loading and verifying them, which cuts a broker's start-up
# CPU by about 40% (5.6 s -> 3.2-3.7 s measured, docs/kafka.md); on two cores that is
# wall time too. A missing or unusable archive only costs that time: the JVM goes on
# without it.
launch_node() {
    local i=$1 opts cds_opt=()
    mapfile -t opts < <(jvm_opts "$i")
    if [[ -f $cds ]]; then
        cds_opt=("-XX:SharedArchiveFile=$cds")
    elif [[ -z $cds_training ]]; then
        cds_training=$cache/.cds.$$.$i.jsa
        cds_trainer=$i
        cds_opt=("-XX:ArchiveClassesAtExit=$cds_training")
    fi
    setpriv --pdeathsig KILL -- java "${opts[@]}" "${cds_opt[@]}" -Xlog:cds=off \
        -Xlog:cds+dynamic=off -cp "$classpath" KsfKafkaReady node "$cluster_id" \
        "$state/node-$i.properties" </dev/null >>"$state/node-$i.out" &
    npid[$i]=$!
    gone[$i]=0
    # Once running, out of bash's job table: bash would print "Killed" for each node
    # stopped with SIGKILL. While starting, `wait` reports a failed node's status.
    ((in_main_loop)) && disown "${npid[$i]}"
    printf '%s\n' "${npid[$i]}" >"$state/node-$i.pid.tmp" &&
        mv -f "$state/node-$i.pid.tmp" "$state/node-$i.pid"
}

# After the training node stopped: its archive into place (atomically), or away. Only
# an archive from a JVM that exited by itself is complete (one stopped with SIGKILL
# leaves a truncated file), and it must map (-Xshare:on fails on an unusable archive).
save_cds() {
    [[ -n $cds_training ]] || return 0
    local p=${npid[$cds_trainer]:-} rc=1
    if [[ -s $cds_training && -n $p && $killed != *" $p "* ]] && ! alive "$p"; then
        # KsfKafkaReady without arguments exits 2 (usage) once the JVM is up; a bad archive
        # aborts the JVM (its inner shell keeps bash's "Aborted" report off stderr).
        bash -c '"$@"; exit $?' _ java "-XX:SharedArchiveFile=$cds_training" -Xshare:on \
            -cp "$classpath" KsfKafkaReady >/dev/null 2>&1 </dev/null
        rc=$?
    fi
    ((rc == 2)) && mv -f "$cds_training" "$cds" 2>/dev/null
    rm -f "$cds_training"
}

write_properties() {
    local i=$1 voters="" j rf=1 isr=1 s
    for ((j = 1; j <= nodes; j++)); do
        voters+="${voters:+,}$j@127.0.0.1:${cport[$j]}"
    done
    if ((nodes >= 3)); then rf=3 isr=2; fi
    {
        echo "# Written by tools/dev kafka for node $i; docs/kafka.md says why each line."
        echo "process.roles=broker,controller"
        echo "node.id=$i"
        echo "controller.quorum.voters=$voters"
        echo "listeners=PLAINTEXT://127.0.0.1:${bport[$i]},CONTROLLER://127.0.0.1:${cport[$i]}"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:${bport[$i]}"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "log.dirs=$data/node-$i"
        echo "default.replication.factor=$rf"
        echo "min.insync.replicas=$isr"
        echo "offsets.topic.replication.factor=$rf"
        echo "transaction.state.log.replication.factor=$rf"
        echo "transaction.state.log.min.isr=$isr"
        echo "group.initial.rebalance.delay.ms=0"
        echo "num.partitions=4"
        echo "auto.create.topics.enable=true"
        ((${#sets[@]})) && echo "# --set"
        for s in "${sets[@]}"; do echo "$s"; done
    } >"$state/node-$i.properties"
}

write_restart_script() {
    local i=$1 f=$state/node-$1.restart
    cat >"$f.tmp" <<EOF
#!/usr/bin/env bash
# Relaunches node $i of the \`tools/dev kafka\` run with pid $$ on the same ports and data.
# The run starts the JVM (so it dies with the run); this returns once node-$i.pid names
# the new JVM, or with --wait once the node has logged "Kafka Server started" (at most
# KSF_KAFKA_START_TIMEOUT seconds, default 60). A node still running is stopped first.
# Exit status: 0 done, 1 the run is gone or the node did not start in time.
set -uo pipefail
state=$(printf '%q' "$state")
tool=$$
log=\$state/node-$i.log
kill -0 "\$tool" 2>/dev/null || { echo "node-$i.restart: the tools/dev kafka run (pid \$tool) is not running" >&2; exit 1; }
lines=\$(wc -l <"\$log" 2>/dev/null || echo 0)
token=\$\$.\$RANDOM.\$(date +%s%N)
deadline=\$((SECONDS + \${KSF_KAFKA_START_TIMEOUT:-60} + ${stop_timeout}))
# The request goes to the run's FIFO; sent again every 5 s without an acknowledgement.
until [[ \$(cat "\$state/node-$i.ack" 2>/dev/null) == "\$token" ]]; do
    ((SECONDS < deadline)) && kill -0 "\$tool" 2>/dev/null ||
        { echo "node-$i.restart: node $i was not relaunched" >&2; exit 1; }
    if ((SECONDS >= \${resend:-0})); then
        timeout 5 bash -c 'printf "restart $i %s\n" "\$1" >"\$2"' _ "\$token" "\$state/control" ||
            { echo "node-$i.restart: the tools/dev kafka run (pid \$tool) did not take the request" >&2; exit 1; }
        resend=\$((SECONDS + 5))
    fi
    sleep 0.05
done
[[ \${1:-} == --wait ]] || exit 0
until tail -n "+\$((lines + 1))" "\$log" 2>/dev/null | grep -q 'Kafka Server started'; do
    pid=\$(cat "\$state/node-$i.pid" 2>/dev/null)
    ((SECONDS < deadline)) && kill -0 "\$pid" 2>/dev/null ||
        { echo "node-$i.restart: node $i did not start (see \$log)" >&2; exit 1; }
    sleep 0.05
done
EOF
    chmod +x "$f.tmp" && mv -f "$f.tmp" "$f"
}

# tails: the end of every node's log, for a failed start.
tails() {
    local i n=$((40 / nodes))
    for ((i = 1; i <= nodes; i++)); do
        say "the last $n lines of $state/node-$i.log:"
        tail -n "$n" "$state/node-$i.log" 2>/dev/null | sed 's/^/  | /' >&2
        [[ -s $state/node-$i.out ]] && tail -n 5 "$state/node-$i.out" | sed 's/^/  > /' >&2
    done
}

# handle_request LINE: one line from the control FIFO ("restart ID TOKEN"). The restart
# script sends its request again when no acknowledgement came; a token already handled
# is only acknowledged again, so a late duplicate does not restart the new JVM.
declare -A handled # node id -> token of the last restart done
handle_request() {
    local verb id token
    read -r verb id token <<<"$1"
    if ! [[ $verb == restart && $id =~ ^[0-9]+$ && -n $token ]] || ((id < 1 || id > nodes)); then
        say "ignored a malformed request on $state/control: '$1'"
        return 0
    fi
    if [[ ${handled[$id]:-} != "$token" ]]; then
        local p=${npid[$id]:-}
        [[ -f $state/node-$id.pid ]] && p=$(<"$state/node-$id.pid")
        if ours "$p"; then
            say "restart: stopping node $id (pid $p) first"
            stop_pids "$p"
        fi
        launch_node "$id"
        handled[$id]=$token
        say "node $id relaunched (pid ${npid[$id]})"
    fi
    printf '%s\n' "$token" >"$state/node-$id.ack.tmp" &&
        mv -f "$state/node-$id.ack.tmp" "$state/node-$id.ack"
}

# ---- main ----------------------------------------------------------------------------

trap cleanup EXIT
trap on_signal INT TERM

check_java
ensure_jars
ensure_helper
if ((fetch_only)); then
    if [[ -f $cds ]]; then
        say "Kafka $KAFKA_VERSION jars ready in $cache"
        exit 0
    fi
    # Start one node once, so that it writes the class-data archive (launch_node).
    say "Kafka $KAFKA_VERSION jars ready in $cache; starting a node once for its class-data archive"
    nodes=1 topics=() keep_data=0 data="" state=""
fi
command -v python3 >/dev/null 2>&1 || fail 3 "python3 was not found on PATH; it picks the free ports."
t0=$(date +%s%N)

sweep_stale
if ((keep_data)); then
    mkdir -p "$data" || bad_usage "cannot create --data-dir $data"
    data=$(cd "$data" && pwd)
    lock_file "$data/.lock" || bad_usage "--data-dir $data is in use by another tools/dev kafka"
    if [[ -f $data/ksf-kafka.nodes && $(<"$data/ksf-kafka.nodes") != "$nodes" ]]; then
        bad_usage "--data-dir $data holds a $(<"$data/ksf-kafka.nodes")-node cluster; run with --nodes $(<"$data/ksf-kafka.nodes") or another directory"
    fi
else
    data=$(mktemp -d "$tmp_root/ksf-kafka.XXXXXX") || fail 1 "cannot create a directory in $tmp_root"
    printf '%s %s\n' "$$" "$(proc_start $$)" >"$data/.owner"
fi
echo "$nodes" >"$data/ksf-kafka.nodes"
run_marker=-Dksf.kafka.run=$data
if [[ -z $state ]]; then
    state=$data/state
fi
mkdir -p "$state" || bad_usage "cannot create --state-dir $state"
state=$(cd "$state" && pwd)
lock_file "$state/.lock" || bad_usage "--state-dir $state is in use by another tools/dev kafka"
state_owned=1
printf '%s\n' "$data" >"$state/data-dir"
printf '%s\n' "$$" >"$state/tool.pid"
rm -f "$state/control" && mkfifo "$state/control" || fail 1 "cannot create the FIFO $state/control"
exec {ctl}<>"$state/control"

pick_ports $((nodes * 2))
declare -A bport cport
bootstrap=""
for ((i = 1; i <= nodes; i++)); do
    bport[$i]=${ports[$(((i - 1) * 2))]}
    cport[$i]=${ports[$(((i - 1) * 2 + 1))]}
    bootstrap+="${bootstrap:+,}127.0.0.1:${bport[$i]}"
done

classpath="$cache/libs/*:$helper_jar"
helper_opts=(-Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.statusLoggerLevel=ERROR
    "-Dlog4j2.configurationFile=$here/log4j2.properties" "-Dksf.log.file=$state/ready.log"
    "-Dksf.stderr.level=OFF" "$run_marker")
# The nodes' class-data archive serves the check too: same class path, many of its classes.
[[ -f $cds ]] && helper_opts+=("-XX:SharedArchiveFile=$cds" -Xlog:cds=off -Xlog:cds+dynamic=off)

# The nodes format their data directories themselves; a reused --data-dir has its id.
cluster_id=""
for ((i = 1; i <= nodes; i++)); do
    write_properties "$i"
    printf '127.0.0.1:%s\n' "${bport[$i]}" >"$state/node-$i.address"
    write_restart_script "$i"
    if [[ -f $data/node-$i/meta.properties ]]; then
        cluster_id=$(sed -n 's/^cluster\.id=//p' "$data/node-$i/meta.properties")
    fi
done
if [[ -z $cluster_id ]]; then
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    cluster_id=${cluster_id/#-/A}
fi

for ((i = 1; i <= nodes; i++)); do
    launch_node "$i"
done

# The readiness check runs beside the nodes; a node that exits meanwhile ends the wait.
setpriv --pdeathsig KILL -- java "${helper_opts[@]}" -cp "$classpath" KsfKafkaReady ready \
    "$bootstrap" "$nodes" $((start_timeout * 1000)) "${topics[@]}" \
    </dev/null >/dev/null 2>"$state/ready.err" &
child=$!
deadline=$((SECONDS + start_timeout + 15))
while alive "$child"; do
    for ((i = 1; i <= nodes; i++)); do
        if ! alive "${npid[$i]}"; then
            wait "${npid[$i]}"
            rc=$?
            tails
            fail 5 "node $i exited with status $rc while starting (its log: $state/node-$i.log)"
        fi
    done
    if ((SECONDS >= deadline)); then
        tails
        fail 5 "the cluster was not ready within ${start_timeout}s (KSF_KAFKA_START_TIMEOUT)"
    fi
    sleep 0.1
done
wait "$child"
rc=$?
child=""
if ((rc != 0)); then
    tails
    [[ -s $state/ready.err ]] && sed 's/^/  /' "$state/ready.err" >&2
    fail 5 "the cluster was not ready within ${start_timeout}s (KSF_KAFKA_START_TIMEOUT)"
fi

if ((fetch_only)); then
    exit 0
fi
printf '%s\n' "$bootstrap" >"$state/bootstrap"
trap '' PIPE
printf '%s\n' "$bootstrap"
trap - PIPE
ms=$((($(date +%s%N) - t0) / 1000000))
say "$nodes node(s) of Kafka $KAFKA_VERSION ready in $((ms / 1000)).$((ms % 1000 / 100)) s at $bootstrap; logs in $state; SIGINT or SIGTERM stops it"

in_main_loop=1
for ((i = 1; i <= nodes; i++)); do
    disown "${npid[$i]}" 2>/dev/null
done
pending="" # a request line that `read -t` timed out in the middle of
while ((!stopping)); do
    if read -r -t 0.5 -u "$ctl" line; then
        handle_request "$pending$line"
        pending=""
        continue
    fi
    pending+=$line
    for ((i = 1; i <= nodes; i++)); do
        if [[ ${gone[$i]} == 0 ]] && ! alive "${npid[$i]}"; then
            gone[$i]=1
            say "node $i (pid ${npid[$i]}) exited; $state/node-$i.restart relaunches it"
        fi
    done
done
exit 0
