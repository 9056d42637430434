# tests/interop/procs.sh: the process helpers every interop script uses, sourced after
# it sets `name` (its name in messages). Defines tmp (a scratch directory), pids (the
# background processes to stop, oldest first) and:
#   wait_for FILE TEXT SECONDS PID   true once TEXT shows up in FILE (false if PID died)
#   fail MESSAGE...                  print it and every non-empty log in $tmp, exit 1
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
