#!/usr/bin/env bash
# Peak resident memory of main-score on a GGUF model, against the file size.
#
# Acceptance (memory issue): scoring with a GGUF model keeps peak RSS under
#   file size + 20% + activations   (no second copy of the weights).
#
# Runs, each under /usr/bin/time -v (GNU time; apt package `time`):
#   inspect    `main-score inspect MODEL`: the process without the weights
#              touched (binary, tokenizer, metadata): the fixed overhead
#   logprobs   `main-score logprobs` over tests/data/fidelity.txt
#   score      `main-score score` on PAIRS pairs of fixtures/alpaca_en_demo.jsonl
# and prints, for each: file size, peak RSS, RSS / file size, the activation
# estimate (from the code, below) and whether peak <= 1.2 x file + activations.
#
# Activation estimate (f32 = 4 bytes; shapes from `main-score inspect`):
#   per forward call of T tokens (model.rs `forward`): the residual stream x,
#     xn, proj (3 x T x d), q and attn (2 x T x H*hd), k and v (2 x T x Hkv*hd),
#     gate and up (2 x T x d_ff), the byte codes of the matmul input (two per element in
#     the default precision, fast: <= 2 x T x d_ff bytes),
#     and the returned hidden states (T x d)
#   KV caches (model.rs `KvCache`): 2 x layers x Hkv*hd x 4 bytes per cached position
#   LM head (logprob.rs `head_logprobs`): a (T x 4096) logits chunk, 3 f64 per target,
#     the gathered target rows (T x d)
#   logprobs: T = 512 (TEXT_CHUNK), one KV cache holding the whole text
#   score:    T = 2048 new tokens per call (ScorerParams::batch_tokens); at most 32 views
#     per call (--batch 16 pairs x 2 views per model), each with its KV cache holding
#     the shared prompt (~PREFIX tokens) plus its new tokens
#
# Usage: benches/memory.sh [--pairs 200] [--threads 2] [--model GGUF] [--no-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fx=${MAIN_FIXTURES:-$root/fixtures}
model=$fx/SmolLM2-135M-Instruct.Q4_1.gguf
pairs=200
threads=2
build=1
PREFIX=32        # tokens of the unconditional ChatML prompt (30 for SmolLM2), rounded up
BATCH_TOKENS=2048
VIEWS_PER_CALL=32
TEXT_CHUNK=512
while [ $# -gt 0 ]; do
  case $1 in
    --pairs) pairs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "memory.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

bin=$root/target/release/main-score
if [ "$build" = 1 ]; then
  (cd "$root" && cargo build --release --quiet -p main-engine --bin main-score)
fi
[ -f "$model" ] || { echo "memory.sh: $model is missing (run scripts/fetch-fixtures)" >&2; exit 1; }
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "memory.sh: installing GNU time (apt package 'time')" >&2
    apt-get install -y -qq time >/dev/null
  else
    echo "memory.sh: /usr/bin/time is missing: sudo apt-get install time" >&2; exit 1
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Peak RSS in bytes of a command (its stdout discarded, stderr kept in $tmp/err).
peak_rss() {
  /usr/bin/time -v -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
  awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 * 1024 }' "$tmp/time"
}

# Model shapes.
"$bin" inspect "$model" >"$tmp/inspect"
shape() { awk -v k="$1" '$1 == k":" { print $2 }' "$tmp/inspect"; }
layers=$(shape layers); d=$(shape d_model); dff=$(shape d_ff)
heads=$(awk '$1 == "heads:" { print $2 }' "$tmp/inspect")
kv_heads=$(awk '$1 == "heads:" { gsub(/\),?/, "", $4); print $4 }' "$tmp/inspect")
hd=$(awk '$1 == "heads:" { print $NF }' "$tmp/inspect")
file=$(stat -L -c %s "$model")

# activations T KV_POSITIONS -> bytes
activations() {
  awk -v T="$1" -v P="$2" -v d="$d" -v H="$heads" -v Hkv="$kv_heads" -v hd="$hd" -v dff="$dff" -v L="$layers" 'BEGIN {
    fwd = 4 * T * (3 * d + 2 * H * hd + 2 * Hkv * hd + 2 * dff + d) + 2 * T * dff
    kv = 4 * 2 * L * Hkv * hd * P
    head = 4 * T * 4096 + 24 * T + 4 * T * d
    printf "%.0f", fwd + kv + head }'
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

# 1. Fixed overhead.
base=$(peak_rss "$bin" inspect "$model")

# 2. logprobs over the fidelity text.
text=$root/tests/data/fidelity.txt
lp=$(peak_rss "$bin" logprobs --model "$model" --text-file "$text" --threads "$threads" --report-speed)
n_text=$(tail -n 1 "$tmp/err" | sed -n 's/.*"tokens":\([0-9]*\).*/\1/p')
act_lp=$(activations "$TEXT_CHUNK" "$n_text")

# 3. score on $pairs pairs (every 5th record, 200 by default).
awk -v n="$pairs" 'NR % 5 == 1 && c < n { print; c++ }' "$fx/alpaca_en_demo.jsonl" >"$tmp/pairs.jsonl"
n_pairs=$(wc -l <"$tmp/pairs.jsonl")
sc=$(peak_rss "$bin" score --input "$tmp/pairs.jsonl" --output "$tmp/out.jsonl" --threads "$threads")
act_sc=$(activations "$BATCH_TOKENS" $((BATCH_TOKENS + VIEWS_PER_CALL * PREFIX)))

echo "model: $model ($(mb "$file")), ${layers} layers, d $d, heads $heads/$kv_heads x $hd, d_ff $dff; $threads threads"
printf '%-30s %10s %10s %8s %12s %12s %-7s %12s\n' run "file" "peak RSS" "RSS/file" "activations" "budget" verdict "weights*"
row() {  # name rss activations
  local budget verdict ratio weights
  ratio=$(awk -v r="$2" -v f="$file" 'BEGIN { printf "%.2f", r / f }')
  if [ "$3" = - ]; then
    printf '%-30s %10s %10s %8s %12s %12s %-7s %12s\n' "$1" "$(mb "$file")" "$(mb "$2")" "$ratio" - - "" -
    return
  fi
  budget=$(awk -v f="$file" -v a="$3" 'BEGIN { printf "%.0f", 1.2 * f + a }')
  if [ "$2" -le "$budget" ]; then verdict=ok; else verdict=OVER; fi
  weights=$(awk -v r="$2" -v b="$base" -v a="$3" 'BEGIN { printf "%.0f", r - b - a }')
  printf '%-30s %10s %10s %8s %12s %12s %-7s %12s\n' "$1" "$(mb "$file")" "$(mb "$2")" "$ratio" \
    "$(mb "$3")" "$(mb "$budget")" "$verdict" "$(mb "$weights")"
}
row "inspect (no weights touched)" "$base" -
row "logprobs, $n_text tokens" "$lp" "$act_lp"
row "score, $n_pairs pairs" "$sc" "$act_sc"
echo "budget = 1.2 x file size + activations (KV caches, forward buffers, LM-head chunk: an upper bound from the code)"
echo "weights* = peak RSS - inspect's RSS (binary, tokenizer, metadata) - activations: the memory left for weights;"
echo "           at most the file size means the weights are resident once (mapped), never copied"
printf '{"model_bytes": %s, "inspect_rss": %s, "logprobs_rss": %s, "logprobs_tokens": %s, "logprobs_activations": %s, "score_rss": %s, "score_pairs": %s, "score_activations": %s}\n' \
  "$file" "$base" "$lp" "$n_text" "$act_lp" "$sc" "$n_pairs" "$act_sc"
