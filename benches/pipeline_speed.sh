#!/usr/bin/env bash
# Wall time of `main-train pipeline` by two binaries on the same settings, in
# one run, one after the other (issue 20: "a 2-round pipeline on 500 unlabeled
# responses ... at least 5x faster than today's code"): the fixture model
# (fixtures/smollm2-f32, CPU, f32), 200 seed Alpaca pairs, the next N Alpaca
# outputs as unlabeled responses, ROUNDS rounds; each round's training time from its
# report (training seconds per round), the total, and the ratio.
#
# Usage: benches/pipeline_speed.sh OLD_MAIN_TRAIN NEW_MAIN_TRAIN [N] [ROUNDS]
#        (defaults: N=500, ROUNDS=2; THREADS=2)
# An older binary without the resume state of pipeline/state.rs ignores it;
# both get a fresh out_dir.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$1 new=$2 n=${3:-500} rounds=${4:-2} threads=${THREADS:-2}
fx=${MAIN_FIXTURES:-$root/fixtures}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -n 1,200p "$fx/alpaca_en_demo.jsonl" > "$dir/seed.jsonl"
sed -n "201,$((200 + n))p" "$fx/alpaca_en_demo.jsonl" |
  python3 -c 'import json,sys; [print(json.dumps({"response": json.loads(l)["output"]})) for l in sys.stdin]' > "$dir/unlabeled.jsonl"
config() {
  cat <<TOML
base_model = "$fx/smollm2-f32"
seed_pairs = "$dir/seed.jsonl"
unlabeled = "$dir/unlabeled.jsonl"
out_dir = "$dir/out-$1"
rounds = $rounds
threads = $threads
[train]
steps = 10
batch_size = 4
max_tokens = 256
[synthesis]
candidates = 2
max_instruction_tokens = 32
max_answer_tokens = 48
[filter]
keep_top = 0.5
TOML
}
declare -A secs
for which in old new; do
  bin=$old; [ $which = new ] && bin=$new
  config $which > "$dir/$which.toml"
  start=$(date +%s.%N)
  RAYON_NUM_THREADS=$threads "$bin" pipeline --config "$dir/$which.toml" > "$dir/$which.out" 2> "$dir/$which.err" \
    || { echo "$which failed:"; tail -20 "$dir/$which.err"; exit 1; }
  secs[$which]=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
  echo "$which: ${secs[$which]} s  ($bin)"
  python3 - "$dir/out-$which" "$which" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "round-*", "report.json"))):
    r = json.load(open(f))
    train = r["forward"]["seconds"] + r["reverse"]["seconds"]
    print(f"  {sys.argv[2]} round {r['round']}: training {train:.1f} s; {r['n_responses']} responses, "
          f"{r['n_candidates']} candidates, {r['n_kept']} kept")
PY
done
python3 -c "o, n = ${secs[old]}, ${secs[new]}; print(f'ratio old/new: {o / n:.2f}x  (old {o:.1f} s, new {n:.1f} s, {$n} unlabeled, {$rounds} rounds, {$threads} threads)')"
