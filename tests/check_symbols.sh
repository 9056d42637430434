#!/bin/sh
# The dynamic symbols libksf exports must equal framework/ksf.sym, one name a line:
# nothing internal leaks (hidden visibility works) and nothing documented is missing.
# Usage: check_symbols.sh LIBKSF_SO KSF_SYM
set -eu
lib=$1
list=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Defined symbols only; _init/_fini and similar linker-provided names are not API.
nm -D --defined-only "$lib" | awk 'NF == 3 && $2 ~ /^[TDBRVWiu]$/ { print $3 }' |
    grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u >"$tmp/exported"
grep -v -E '^[[:space:]]*(#|$)' "$list" | sort -u >"$tmp/listed"
missing=$(comm -13 "$tmp/exported" "$tmp/listed")
extra=$(comm -23 "$tmp/exported" "$tmp/listed")
status=0
if [ -n "$missing" ]; then
    echo "listed in $(basename "$list") but not exported by $(basename "$lib") ($(echo "$missing" | wc -l)):"
    echo "$missing" | sed 's/^/  missing: /'
    status=1
fi
if [ -n "$extra" ]; then
    echo "exported by $(basename "$lib") but not listed in $(basename "$list") ($(echo "$extra" | wc -l)):"
    echo "$extra" | sed 's/^/  extra: /'
    echo "  (add it to the list if it is public API, otherwise make it static or ksfi_ hidden)"
    status=1
fi
[ $status -eq 0 ] && echo "$(wc -l <"$tmp/exported") exported symbols match $(basename "$list")"
exit $status
