#!/usr/bin/env bash
# Spring Kafka interoperability, both directions, on the real broker in KSF_TEST_KAFKA:
#   1. Spring -> C: SpringClient (ReplyingKafkaTemplate) calls examples/hero's hero_server
#      and interop_server's matrix;
#   2. C -> Spring: spring_client (a ksf client, client.wire.dialect=spring) calls
#      SpringService's @KafkaListener + @SendTo matrix and emits an event to it.
# Usage: run.sh SPRING_CLIENT INTEROP_SERVER HERO_SERVER MAVEN_BUILD_DIR
# Exit 0: all passed; 1: a check failed; 77 (meson: skipped) without KSF_TEST_KAFKA
# (host:port list of a real Kafka broker), Java 17+ or Maven, saying which. Spring's
# Kafka client (kafka-clients 4.x) cannot use the embedded broker: docs/interop-spring.md.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
c_client=$1 c_server=$2 hero_server=$3 mvn_dir=$4

if [[ -z ${KSF_TEST_KAFKA:-} ]]; then
    echo "skipped: KSF_TEST_KAFKA is not set (the host:port of a real Kafka broker;" \
        "Spring's kafka-clients 4.x cannot talk to the embedded broker)"
    exit 77
fi
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "skipped: java or mvn not found (install openjdk-17-jdk-headless and maven)"
    exit 77
fi
java_major=$(java -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java.specification.version = //p')
if ((${java_major%%.*} < 17)); then
    echo "skipped: Java $java_major is too old; Spring Boot 4 needs Java 17 or later"
    exit 77
fi
broker=$KSF_TEST_KAFKA

# Build the Spring jar once per build dir: again only when a source is newer.
# (A stamp file, not the jar: the jar's mtime is the pom's fixed outputTimestamp.)
jar=$mvn_dir/ksf-spring-interop.jar stamp=$mvn_dir.stamp
if [[ ! -f $jar || ! -f $stamp ]] ||
    [[ -n $(find "$here/pom.xml" "$here/src" -newer "$stamp" -print -quit) ]]; then
    t0=$SECONDS
    # Offline first: the CI machine keeps ~/.m2 between runs; online when it lacks a jar.
    if ! mvn -B -q -o -f "$here/pom.xml" package -Dksf.build.dir="$mvn_dir" \
        >"$mvn_dir.log" 2>&1 &&
        ! mvn -B -q -f "$here/pom.xml" package -Dksf.build.dir="$mvn_dir" \
            >"$mvn_dir.log" 2>&1; then
        if grep -q 'Could not resolve\|Could not transfer\|Non-resolvable' "$mvn_dir.log"; then
            echo "skipped: Maven could not fetch the Spring packages (log: $mvn_dir.log)"
            exit 77
        fi
        echo "interop_spring: the Spring peers did not build:"
        sed 's/^/  mvn: /' "$mvn_dir.log"
        exit 1
    fi
    touch "$stamp"
    echo "# built $(basename "$jar") in $((SECONDS - t0)) s"
fi
# The pin: the jar's classpath must be exactly the committed list.
if ! diff <(unzip -p "$jar" BOOT-INF/classpath.idx | sed 's/^- "BOOT-INF\/lib\/\(.*\)"$/\1/') \
    "$here/classpath.txt"; then
    echo "interop_spring: the Spring jar's classpath differs from classpath.txt (above);" \
        "a dependency moved: check it, then update the list"
    exit 1
fi

name=interop_spring
# shellcheck source=tests/interop/procs.sh
source "$here/../procs.sh"

# An array, not a function: `"${spring[@]}" ... &` makes $! the JVM itself, which
# cleanup's TERM then reaches (a backgrounded function would be a subshell around it).
spring=(java -Xmx256m -XX:TieredStopAtLevel=1 -Xshare:auto -jar "$jar")

# Every topic exists before anyone subscribes: nobody waits for auto-creation, and no
# request is sent to a topic a consumer has not yet found.
topics=(hero.kill.dragon hero.dragon.killed spring-interop.replies spring-interop.replies-group)
for p in object array string number null echo rpc-string rpc-object plain-error stream \
    stream-sync async context meta; do
    topics+=("interop.$p")
done
for p in object array string number null kafka-null echo error error-plain slow headers; do
    topics+=("spring.$p" "spring.$p.reply")
done
topics+=(spring.event)
echo "# real Kafka at $broker (t=${SECONDS}s)"
"${spring[@]}" topics "$broker" "${topics[@]}" >"$tmp/topics.log" 2>&1 ||
    fail "could not create the topics on $broker"

echo "# 1. Spring client -> ksf services (t=${SECONDS}s)"
# ReplyingKafkaTemplate names its own reply topics: the servers allow them
# (server.reply.topics; by default only <pattern>.reply is answered).
"$hero_server" --brokers "$broker" --set group.id=spring-interop-hero \
    --set 'server.reply.topics=spring-interop.replies*' \
    >"$tmp/hero_server.out" 2>"$tmp/hero_server.log" &
pids+=($!)
wait_for "$tmp/hero_server.out" 'ready' 60 "${pids[-1]}" || fail "hero_server did not become ready"
start_ready "ksf interop server" "$tmp/c_server.log" 'ksf interop server ready' 60 \
    "$c_server" "$broker"
echo "# ksf services ready (t=${SECONDS}s)"
"${spring[@]}" client "$broker" >"$tmp/spring_client.out" 2>"$tmp/spring_client.log"
s_rc=$?
grep -v '^#' "$tmp/spring_client.out" || true
for i in 1 0; do kill -TERM "${pids[i]}" 2>/dev/null; wait "${pids[i]}" 2>/dev/null; done
pids=()

echo "# 2. ksf client -> Spring service (t=${SECONDS}s)"
start_ready "Spring service" "$tmp/spring_service.log" 'spring service ready' 120 \
    "${spring[@]}" server "$broker" "$tmp/events.jsonl"
echo "# Spring service ready (t=${SECONDS}s)"
"$c_client" "$broker" "$tmp/events.jsonl" | tee "$tmp/c_client.out"
c_rc=${PIPESTATUS[0]}

sum_results "$tmp/spring_client.out" "$tmp/c_client.out"
echo "# done (t=${SECONDS}s)"
echo "interop_spring: $passed passed, $failed failed"
((s_rc == 0 && c_rc == 0 && failed == 0)) || fail "see the failures above"
