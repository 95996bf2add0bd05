#!/usr/bin/env bash
# Issue 19's GPU check in one command on the GPU machine, both sides in one
# run: an LLaMA-3-8B-shaped model (random weights made there) trains STEPS
# optimizer steps of TOKENS tokens with `main-train sft` and its
# memory-saving settings (bf16 weights, 8-bit AdamW state on the GPU, the
# optimizer step inside backward), and the run's measured device peak is
# set beside `main-train plan` of the same flags; then PyTorch trains the
# same shape the same number of steps (benches/gpu_train.py: bf16, SDPA,
# activation checkpointing, fused AdamW). Tokens/s of both, their ratio and
# main-train's MFU.
#
# Usage: benches/gpu_train.sh MAIN_TRAIN
#   MAIN_TRAIN: a `main-train` built with --features cuda (scripts/build-cuda).
#   env: CONFIG (default trainer/tests/data/llama-3-8b.json), STEPS (20),
#        TOKENS (4096), FX (fixtures), PYTHON (a python with torch and
#        transformers; default python3), PEAK_TFLOPS (the GPU's dense bf16
#        peak for MFU; default 989, an H100/H200 SXM), OUT (logs; default a
#        temporary folder), FLAGS (main-train's memory flags; default the
#        memory-saving set). With no GPU the script runs on the CPU (try it
#        with a small CONFIG): no device peak, no MFU.
# Prints lines starting with BENCH; exits non-zero if a run fails.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
train=${1:?usage: benches/gpu_train.sh MAIN_TRAIN}
config=${CONFIG:-$root/trainer/tests/data/llama-3-8b.json}
steps=${STEPS:-20} tokens=${TOKENS:-4096}
fx=${FX:-${MAIN_FIXTURES:-$root/fixtures}}
python=${PYTHON:-python3}
peak=${PEAK_TFLOPS:-989}
flags=${FLAGS:---param-dtype bf16 --moments 8bit --step-in-backward --clip 0}
work=${OUT:-$(mktemp -d)}
mkdir -p "$work"
gpu=0
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && gpu=1
status=0

# ---- the model ----------------------------------------------------------------
model=$work/model
if [ ! -f "$model/config.json" ]; then
  t0=$SECONDS
  "$train" init --config "$config" --tokenizer "$fx/smollm2-f32" --out "$model" \
    >"$work/init.log" 2>&1 || { tail -n 20 "$work/init.log"; echo "BENCH FAIL init"; exit 1; }
  echo "BENCH init: random weights for $(basename "$config") in $((SECONDS - t0)) s"
fi

# ---- the plan -------------------------------------------------------------------
# shellcheck disable=SC2086
"$train" plan --model "$model" --device "$([ $gpu = 1 ] && echo cuda || echo cpu)" \
  --tokens "$tokens" --max-tokens "$tokens" $flags --json >"$work/plan.json" \
  || { echo "BENCH FAIL plan"; exit 1; }
planned=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_bytes"])' "$work/plan.json")
echo "BENCH plan: $planned bytes at the peak ($flags, $tokens tokens)"

# ---- main-train ---------------------------------------------------------------------
sampler=
if [ $gpu = 1 ]; then
  # The device's used memory every 100 ms (the CUDA context included).
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/mem.csv" &
  sampler=$!
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
fi
t0=$SECONDS
# shellcheck disable=SC2086
"$train" sft --quiet --model "$model" --data "$fx/alpaca_en_demo.jsonl" --direction forward \
  --steps "$steps" --tokens "$tokens" --max-tokens "$tokens" --eval-fraction 0 $flags \
  --out "$work/run" >"$work/sft.log" 2>&1 || { tail -n 30 "$work/sft.log"; echo "BENCH FAIL sft"; status=1; }
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
echo "BENCH sft: $((SECONDS - t0)) s wall (model load and save included)"
if [ $status = 0 ]; then
  python3 - "$work/run/metrics.jsonl" "$tokens" "$peak" "$gpu" "$planned" "$work/mem.csv" "${base:-0}" \
    "$work/plan.json" >"$work/main.json" <<'PY'
import json, sys
path, tokens, peak, gpu, planned, mem, base, plan = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if '"loss"' in l]
timed = rows[1:]
secs = rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]
tps = sum(r["tokens"] for r in timed) / secs
n = json.load(open(plan))["n_params"]
out = {"tokens_per_s": round(tps, 1), "losses": [round(r["loss"], 4) for r in rows], "n_params": n}
if gpu == "1":
    used = max(int(l) for l in open(mem) if l.strip()) * 2**20
    out["device_peak_bytes"] = used - int(base) * 2**20
    out["planned_bytes"] = int(planned)
    out["plan_error"] = round(int(planned) / out["device_peak_bytes"] - 1, 4)
    # 6 N per token for the matmuls, plus recomputation's second forward (2 N).
    out["mfu"] = round(8 * n * tps / (float(peak) * 1e12), 4)
print(json.dumps(out))
PY
  echo "BENCH main-train: $(cat "$work/main.json")"
fi

# ---- PyTorch -----------------------------------------------------------------------
mkdir -p "$work/peer" && cp "$config" "$work/peer/config.json"
"$python" "$root/benches/gpu_train.py" --config "$work/peer" \
  --data "$fx/alpaca_en_demo.jsonl" --tokenizer "$fx/smollm2-f32" --steps "$steps" \
  --tokens "$tokens" --device "$([ $gpu = 1 ] && echo cuda || echo cpu)" \
  >"$work/peer.json" 2>"$work/peer.log" || { tail -n 30 "$work/peer.log"; echo "BENCH FAIL pytorch"; status=1; }
[ -s "$work/peer.json" ] && echo "BENCH pytorch: $(cat "$work/peer.json")"
if [ $status = 0 ]; then
  python3 - "$work/main.json" "$work/peer.json" <<'PY'
import json, sys
m, p = (json.load(open(f)) for f in sys.argv[1:])
print(f"BENCH ratio: main-train {m['tokens_per_s']} tokens/s, PyTorch {p['tokens_per_s']} tokens/s, "
      f"{m['tokens_per_s'] / p['tokens_per_s']:.2f}x")
PY
fi
exit $status
