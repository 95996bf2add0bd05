#!/usr/bin/env bash
# Batched generation on the GPU (issue 20), in one command on the GPU
# machine, everything side by side in one run:
#
#  1. `main-score generate` on N real Alpaca instructions (greedy, at most
#     MAX_NEW tokens each, the fixture model SmolLM2-135M Q4_1): the GPU
#     batched (--batch 32) against the GPU one at a time (--batch 1) and
#     against the CPU batched (all cores), in bf16 (the GPU's default) and
#     exact; tokens/s of each and the ratios, and how many completions are
#     identical (GPU batched vs alone; GPU exact vs CPU exact).
#  2. With MAIN_TRAIN (a `main-train` built with --features cuda, e.g. by
#     scripts/build-cuda): the 2-round pipeline of benches/pipeline_speed.sh
#     (200 seed pairs, N_UNLABELED responses) with training and synthesis on
#     the GPU; the time of each stage from main-train's progress lines.
#
# Usage: benches/gpu_generate.sh MAIN_SCORE [MAIN_TRAIN]
#   env: FX (fixtures; default $MAIN_FIXTURES or ./fixtures), N (64),
#        MAX_NEW (64), N_UNLABELED (500), DEVICE (cuda; `cpu` tries the
#        script on a machine without a GPU, where "GPU" runs are the CPU's),
#        BASE (the pipeline's HF base model; default: exported from the GGUF
#        by `main-score export`), OUT (logs; default a temporary folder).
# Prints lines starting with BENCH; a failing run prints its stderr and the
# script exits non-zero.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
score=${1:?usage: benches/gpu_generate.sh MAIN_SCORE [MAIN_TRAIN]}
train=${2:-}
fx=${FX:-${MAIN_FIXTURES:-$root/fixtures}}
n=${N:-64} max_new=${MAX_NEW:-64} n_unlabeled=${N_UNLABELED:-500}
device=${DEVICE:-cuda}
work=${OUT:-$(mktemp -d)}
mkdir -p "$work"
model=$fx/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "gpu_generate: $model is missing" >&2; exit 1; }
status=0

# ---- 1. generation ------------------------------------------------------------
python3 - "$fx/alpaca_en_demo.jsonl" "$n" >"$work/prompts.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][: int(sys.argv[2])]
for r in rows:
    x = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
    print(json.dumps({"prompt": x}))
PY

# gen NAME ARGS...: one `main-score generate` run; its tokens/s into $work/NAME.tps.
gen() {
  local name=$1; shift
  rm -f "$work/$name.jsonl"
  local t0=$SECONDS rc=0
  "$score" generate "$work/prompts.jsonl" --output "$work/$name.jsonl" --model "$model" \
    --max-new-tokens "$max_new" "$@" 2>"$work/$name.stderr" || rc=$?
  if [ $rc != 0 ]; then
    tail -n 20 "$work/$name.stderr"
    echo "BENCH FAIL generate $name (exit $rc)"; status=1; return 1
  fi
  local tps
  tps=$(sed -n 's/.* tokens in .* s (\([0-9.]*\) tokens\/s).*/\1/p' "$work/$name.stderr" | tail -n1)
  echo "$tps" >"$work/$name.tps"
  echo "BENCH generate $name: $tps tokens/s ($((SECONDS - t0)) s wall, model load included; $*)"
}

if [ "$device" = cpu ]; then gpu_default=(); else gpu_default=(--precision bf16); fi
gen gpu-batched --device "$device" --batch 32 "${gpu_default[@]}"
gen gpu-alone --device "$device" --batch 1 "${gpu_default[@]}"
gen gpu-exact-batched --device "$device" --batch 32 --precision exact
gen gpu-exact-alone --device "$device" --batch 1 --precision exact
gen cpu-batched --device cpu --batch 32 --threads 0
gen cpu-exact-batched --device cpu --batch 32 --threads 0 --precision exact

python3 - "$work" "$device" <<'PY'
import json, os, sys
work, device = sys.argv[1], sys.argv[2]
def tps(name):
    p = os.path.join(work, name + ".tps")
    try:
        return float(open(p).read())
    except (OSError, ValueError):
        return None
def completions(name):
    p = os.path.join(work, name + ".jsonl")
    return [json.loads(l)["completion"] for l in open(p)] if os.path.exists(p) else None
def ratio(a, b, what):
    x, y = tps(a), tps(b)
    if x and y:
        print(f"BENCH ratio {what}: {x / y:.2f}x ({a} {x:.1f} / {b} {y:.1f} tokens/s)")
ratio("gpu-batched", "gpu-alone", f"{device} batched / one at a time (default precision)")
ratio("gpu-exact-batched", "gpu-exact-alone", f"{device} batched / one at a time (exact)")
ratio("gpu-batched", "cpu-batched", f"{device} batched / CPU batched (default precisions)")
ratio("gpu-exact-batched", "cpu-exact-batched", f"{device} batched / CPU batched (exact)")
def same(a, b):
    x, y = completions(a), completions(b)
    if x is None or y is None:
        return
    k = sum(p == q for p, q in zip(x, y))
    print(f"BENCH identical completions {a} vs {b}: {k} of {len(x)}")
same("gpu-batched", "gpu-alone")
same("gpu-exact-batched", "gpu-exact-alone")
same("gpu-exact-batched", "cpu-exact-batched")
PY

# ---- 2. the 2-round pipeline ---------------------------------------------------
if [ -z "$train" ]; then
  echo "BENCH pipeline: skipped (no MAIN_TRAIN given)"
  exit $status
fi
base=${BASE:-}
if [ -z "$base" ]; then
  base=$work/smollm2-f32
  [ -f "$base/config.json" ] || "$score" export "$model" "$base" >/dev/null 2>"$work/export.stderr" ||
    { tail "$work/export.stderr"; echo "BENCH FAIL export of the base model"; exit 1; }
fi
sed -n 1,200p "$fx/alpaca_en_demo.jsonl" >"$work/seed.jsonl"
sed -n "201,$((200 + n_unlabeled))p" "$fx/alpaca_en_demo.jsonl" |
  python3 -c 'import json,sys; [print(json.dumps({"response": json.loads(l)["output"]})) for l in sys.stdin]' >"$work/unlabeled.jsonl"
rm -rf "$work/pipeline"
cat >"$work/pipeline.toml" <<TOML
base_model = "$base"
seed_pairs = "$work/seed.jsonl"
unlabeled = "$work/unlabeled.jsonl"
out_dir = "$work/pipeline"
rounds = 2
threads = 0
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
# Each progress line with the seconds since the start: a stage lasts from
# its line to the next.
"$train" pipeline --config "$work/pipeline.toml" 2>&1 >"$work/pipeline.out" |
  python3 -c '
import sys, time
t0 = time.monotonic()
for line in sys.stdin:
    print(f"{time.monotonic() - t0:9.1f} {line}", end="", flush=True)
' >"$work/pipeline.log"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
  tail -n 30 "$work/pipeline.log"
  echo "BENCH FAIL pipeline (exit $rc)"
  exit 1
fi
python3 - "$work/pipeline.log" "$device" <<'PY'
import re, sys
lines = [l.rstrip("\n") for l in open(sys.argv[1])]
stamps = [(float(l[:9]), l[10:]) for l in lines if re.match(r"^ *[0-9.]+ ", l)]
# Stages: training lines and synthesis lines (each until the next stage line).
stage = re.compile(r"^(training (forward|reverse) model|round \d+: synthesis)")
marks = [(t, s) for t, s in stamps if stage.match(s)]
end = stamps[-1][0] if stamps else 0.0
for (t, s), nxt in zip(marks, marks[1:] + [(end, "end")]):
    print(f"BENCH pipeline stage {nxt[0] - t:7.1f} s  {s}")
print(f"BENCH pipeline total {end:.1f} s (2 rounds, training and synthesis on {sys.argv[2]})")
PY
exit $status
