#!/usr/bin/env bash
# Mixed precision against fp32 on a small embedded run (issue 10): one GPU, ~3 minutes.
# Teachers, cache and fuse run once (fp32, cpu); the mcad student is then distilled on cuda in
# fp32 (seeds 0 and 1: the seed-to-seed spread is the noise) and in bf16 (seed 0), and evaluated.
#   bash scripts/check_amp.sh [N_TRAIN] [OUT_DIR]
set -euo pipefail
n_train=${1:-2000}
out=${2:-reports/amp_check}
mkdir -p "$out"
python3 - "$n_train" <<'PY'
import sys, yaml
base = yaml.safe_load(open("params.yaml"))
base["data"]["synthetic"].update(n_train=int(sys.argv[1]), n_val=500, n_test=500)
base["distill"]["variants"] = ["mcad"]
for name, device, precision, seed in [("prep", "cpu", "fp32", 0), ("fp32_s0", "cuda", "fp32", 0),
                                      ("fp32_s1", "cuda", "fp32", 1), ("bf16_s0", "cuda", "bf16", 0)]:
    p = {**base, "device": device, "precision": precision, "seed": seed}
    yaml.safe_dump(p, open(f"/tmp/amp_{name}.yaml", "w"), sort_keys=False)
PY
export MCAD_LIVE=0
for stage in prepare teachers cache fuse; do python3 stages/$stage.py --params /tmp/amp_prep.yaml; done
for run in fp32_s0 fp32_s1 bf16_s0; do
  rm -rf models/checkpoints/mcad
  start=$(date +%s.%N)
  python3 stages/distill.py --variant mcad --params /tmp/amp_$run.yaml
  end=$(date +%s.%N)
  python3 stages/evaluate.py --params /tmp/amp_$run.yaml
  python3 - "$run" "$start" "$end" "$out" <<'PY'
import json, sys
run, start, end, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
m = json.load(open("reports/results.json"))["mcad"]
m["distill_wall_s"] = round(end - start, 1)
json.dump(m, open(f"{out}/{run}.json", "w"), indent=1)
print(run, {k: m[k] for k in ("rsum", "twin_acc", "distill_wall_s") if k in m})
PY
done
