#!/usr/bin/env bash
# Thread scaling of main-score (issue 22 item 5): one process with --threads N
# on PAIRS pairs against N one-thread processes, each on its share of the same
# pairs, started together. Both sides score the same records with the same
# model and precision; the N processes pay the model load and the prompt
# prefix N times, which one process pays once.
#
# Acceptance: the one process's wall time is at most 1/0.97 of the N
# processes' (ratio = processes / one process >= 0.97).
#
# Also checks that the records of the N shares, put back together, are the
# one process's records exactly, every score to the last bit (they do not
# depend on the thread count or on how views are batched); only each
# record's "line" is renumbered, from its share's file to the whole one.
#
# Times with `date +%s.%N` around each of R rounds (the two sides alternate
# within a round, so a change in the machine's load hits both) and reports
# the medians. (No hyperfine: it cannot time N processes started together
# as one command without a wrapper shell of its own.)
#
# Usage: benches/thread_scaling.sh [--pairs 200] [--threads 2] [--runs 3]
#          [--precision P] [--bin PATH] [--no-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fx=${MAIN_FIXTURES:-$root/fixtures}
export MAIN_FIXTURES=$fx   # a binary outside the checkout finds the default model through it
pairs=200
threads=2
runs=3
precision=""
bin=""
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) pairs=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --precision) precision=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    bin=$target/release/main-score
    if [ "$build" = 1 ]; then
        (cd "$root" && cargo build --release -q -p main-engine --bin main-score)
    fi
fi
[ -x "$bin" ] || { echo "no main-score binary at $bin" >&2; exit 1; }
input=$fx/alpaca_en_demo.jsonl
[ -f "$input" ] || { echo "missing $input (scripts/fetch-fixtures)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -n "$pairs" "$input" > "$work/all.jsonl"
n=$(wc -l < "$work/all.jsonl")
# Contiguous shares, as one would split a file for N processes.
per=$(( (n + threads - 1) / threads ))
split -d -a 2 -l "$per" "$work/all.jsonl" "$work/share."
shares=("$work"/share.??)
extra=()
[ -n "$precision" ] && extra=(--precision "$precision")

one() {
    "$bin" score --input "$work/all.jsonl" --output "$work/one.out" \
        --threads "$threads" "${extra[@]}" 2>/dev/null
}
many() {
    local pids=()
    for s in "${shares[@]}"; do
        "$bin" score --input "$s" --output "$s.out" --threads 1 "${extra[@]}" 2>/dev/null &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}
# Outputs and their provenance files both go: a score run resumes from them.
clean() { rm -f "$work"/*.out "$work"/*.provenance.json; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary: $bin; $n pairs; one process --threads $threads vs ${#shares[@]} processes --threads 1${precision:+; precision $precision}"

t_one=""; t_many=""
for r in $(seq "$runs"); do
    clean
    a=$(date +%s.%N); one; b=$(date +%s.%N)
    many; c=$(date +%s.%N)
    t_one+="$(echo "$b - $a" | bc) "; t_many+="$(echo "$c - $b" | bc) "
    echo "round $r: one process $(echo "$b - $a" | bc) s, ${#shares[@]} processes $(echo "$c - $b" | bc) s, load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
t_one=$(echo "$t_one" | median); t_many=$(echo "$t_many" | median)

# The shares' records, in order, with their "line" (1-based in the file
# scored) moved back to the whole file's numbering, must be the one
# process's records exactly.
same=$(python3 - "$work/one.out" "$per" "$work"/share.??.out <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
per = int(sys.argv[2])
many = []
for k, path in enumerate(sys.argv[3:]):
    for l in open(path):
        r = json.loads(l)
        r["alignment"]["line"] += k * per
        many.append(r)
print("true" if one == many else "false")
PY
)
ratio=$(echo "scale=3; $t_many / $t_one" | bc)
echo "one process: ${t_one} s; ${#shares[@]} processes: ${t_many} s (medians of $runs)"
echo "ratio (processes / one process, >= 0.97 wanted): $ratio; records identical: $same"
echo "{\"pairs\": $n, \"threads\": $threads, \"one_s\": $t_one, \"processes_s\": $t_many, \"ratio\": $ratio, \"identical\": $same}"
