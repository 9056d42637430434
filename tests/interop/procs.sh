# tests/interop/procs.sh: the process helpers every interop script uses, sourced after
# it sets `name` (its name in messages). Defines tmp (a scratch directory), pids (the
# background processes to stop, oldest first) and:
#   wait_for FILE TEXT SECONDS PID   true once TEXT shows up in FILE (false if PID died)
#   fail MESSAGE...                  print it and every non-empty log in $tmp, exit 1
#   start_ready WHAT LOG TEXT SECONDS CMD...
#                                    start CMD in the background (stdout and stderr to
#                                    LOG, its pid onto pids) and wait for TEXT in LOG;
#                                    fail "the WHAT did not become ready" otherwise
#   sum_results OUT...               sets passed/failed to the sums of the last
#                                    "N passed, N failed" line of each OUT (an OUT
#                                    without one counts as one failure)
# On exit the processes stop newest first (services leave their groups while the broker
# is still up) and $tmp is removed.
tmp=$(mktemp -d "/tmp/ksf-$name.XXXXXX")
pids=()
cleanup() {
    # The exit status stays the script's: an EXIT trap's last status could replace it.
    local rc=$? i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null
        wait "${pids[i]}" 2>/dev/null
    done
    rm -rf "$tmp"
    return "$rc"
}
trap cleanup EXIT

wait_for() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

fail() {
    echo "$name: $*"
    for f in "$tmp"/*.log; do [[ -s $f ]] && sed "s/^/  $(basename "$f"): /" "$f"; done
    exit 1
}

start_ready() {
    local what=$1 log=$2 text=$3 seconds=$4
    shift 4
    "$@" >"$log" 2>&1 &
    pids+=($!)
    wait_for "$log" "$text" "$seconds" "${pids[-1]}" || fail "the $what did not become ready"
}

sum_results() {
    local out line p f
    passed=0 failed=0
    for out; do
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1)
        [[ -n $line ]] || { failed=$((failed + 1)); continue; }
        read -r p _ f _ <<<"${line//,/}"
        passed=$((passed + p)) failed=$((failed + f))
    done
}
