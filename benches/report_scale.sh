#!/usr/bin/env bash
# Time and peak memory of `main-score report` on 100,000 and 1,000,000
# records (BENCHMARKS.md, "Report"): the 1,000 real scored records of
# scripts/scored-demo (target/report/scored-1000.jsonl), their per-token
# detail left out, repeated with their own ids, instructions and lines
# (as engine/tests/report.rs makes them), each count reported once with
# its wall time, the file size, and the process's own peak resident
# memory (VmHWM, printed by the hidden --report-peak-memory).
#
# Usage: benches/report_scale.sh [COUNT...]   (default: 100000 1000000)
# Needs about 1.3 GB of disk under $TMPDIR for a million records.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
bin=$CARGO_TARGET_DIR/release/main-score
[ -x "$bin" ] || cargo build --quiet --release -p main-engine --bin main-score
scripts/scored-demo
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100000 1000000)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for n in "${counts[@]}"; do
  input=$dir/records-$n.jsonl
  python3 - "$n" target/report/scored-1000.jsonl "$input" <<'PY'
import json, sys
n, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]
base = []
for line in open(src):
    if not line.strip():
        continue
    r = json.loads(line)
    a = r["alignment"]
    for obj in [a] + a.get("turns", []):
        obj.pop("response_detail", None)
        obj.pop("instruction_detail", None)
    base.append(r)
with open(dst, "w") as out:
    for k in range(n):
        r = base[k % len(base)]
        r = dict(r, id=k)
        if "instruction" in r:
            r["instruction"] = f"{r['instruction']} #{k}"
        r["alignment"] = dict(r["alignment"], line=k + 1)
        out.write(json.dumps(r) + "\n")
PY
  bytes=$(stat -c %s "$input")
  start=$(date +%s.%N)
  peak=$("$bin" report "$input" -o "$dir/report-$n.html" --keep-top 0.5 --report-peak-memory 2>&1 |
    sed -n 's/^{"peak_bytes": \([0-9]*\)}$/\1/p')
  end=$(date +%s.%N)
  python3 -c "import sys; n, b, s, e, p = sys.argv[1:]; print(f'{int(n):>9,} records  {int(b)/1e6:8.1f} MB file  {float(e)-float(s):6.1f} s  peak {int(p)/2**20:6.1f} MiB')" \
    "$n" "$bytes" "$start" "$end" "$peak"
done
