#!/bin/bash
# Recipe sweep for the demo's two stages, run in parallel (meant for an accelerator
# machine: the step-by-step dynamics do not depend on the hardware, so a GPU picks
# step counts and sizes for the 2-core CPU demo in minutes).
#
#   bash bench/demo_sweep.sh OUT VARIANT [VARIANT ...]
#   VARIANT = name:tok_steps:tok_width:gen_steps[:tok_overrides[:gen_overrides]]
#   overrides are `--config.key=value` flags joined with `+`, e.g.
#   bash bench/demo_sweep.sh /tmp/sweep base:1800:64:1200 \
#       w128:1800:64:600::--config.generator.width=128+--config.optim.lr=1e-3
#
# Each variant trains `configs/vq2d.py:tiny` for tok_steps, then the demo's generator,
# `configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal`, on its tokens for gen_steps, draws $NUM
# (500) samples (classes cycled) at every guidance scale in $CFGS ("2 4 8") and scores
# them with `evals.fid gfid --features shapes` against the test split. It writes
# OUT/results.json (per variant: the tokenizer's and generator's final eval, and
# FID and class accuracy per scale), OUT/images.npz (the final reconstruction
# preview, and 16 samples per class per scale) and OUT/logs.tgz.
# Environment: DATA (TFDS dir, built if missing), RUNS (workdirs), NUM, CFGS.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ $# -lt 2 ]; then sed -n 2,20p "$0"; exit 2; fi
O=$1; shift
D=${DATA:-/tmp/sweep_data} W=${RUNS:-/tmp/sweep_runs} N=${NUM:-500} CFGS=${CFGS:-"2 4 8"}
mkdir -p "$W/logs" "$O"
python3 -c "from visgen.data import ensure_built; ensure_built('shapes', '', '$D')" || exit 1

run_variant() {  # name tok_steps tok_width gen_steps tok_overrides gen_overrides
  local R=$W/$1 TX=${5//+/ } GX=${6//+/ }
  rm -rf "$R"; mkdir -p "$R"
  # shellcheck disable=SC2086  # TX and GX are lists of flags
  python3 -m launch.train --config configs/vq2d.py:tiny --workdir "$R/tok" \
    --config.data.data_dir="$D" --config.train.steps="$2" --config.train.eval_every="$2" \
    --config.train.checkpoint_every="$2" --config.tokenizer.width="$3" $TX || return
  # shellcheck disable=SC2086
  python3 -m launch.train --config configs/ar.py:tokenizer=vq2d,tiny,shuffle=2,causal \
    --workdir "$R/gen" --config.tokenizer_workdir="$R/tok" --config.data.data_dir="$D" \
    --config.train.steps="$4" --config.train.eval_every="$4" \
    --config.train.checkpoint_every="$4" $GX || return
  for c in $CFGS; do
    python3 -m launch.sample --workdir "$R/gen" --out "$R/s$c" --num "$N" --batch-size 100 \
      --cfg "$c" || return
    python3 -m evals.fid gfid --samples "$R/s$c/samples.npz" --ref-dataset shapes \
      --ref-split test --features shapes --data-dir "$D" --out "$R/fid$c.json" || return
  done
}

variant() {
  local n ts w gs tx gx
  IFS=: read -r n ts w gs tx gx <<< "$1"
  run_variant "$n" "$ts" "$w" "$gs" "$tx" "$gx" > "$W/logs/$n.log" 2>&1
  echo "$n done rc=$?"
}

for v in "$@"; do variant "$v" & done
wait
tar czf "$O/logs.tgz" -C "$W" logs
python3 - "$O" "$W" "$@" <<'PY'
import glob, json, os, sys

import numpy as np
from PIL import Image

out, runs, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
results, images = {}, {}
for spec in specs:
    name = spec.split(":")[0]
    root, result = os.path.join(runs, name), {"spec": spec}
    for stage in ("tok", "gen"):
        evals = sorted(glob.glob(f"{root}/{stage}/eval/step_*.json"))
        if evals:
            with open(evals[-1]) as f:
                result[stage] = {k: v for k, v in json.load(f).items() if isinstance(v, (int, float))}
        previews = sorted(glob.glob(f"{root}/{stage}/images/preview_*.png"))
        if previews:
            images[f"{name}_{stage}_preview"] = np.asarray(Image.open(previews[-1]))
    for path in sorted(glob.glob(f"{root}/fid*.json")):
        scale = os.path.basename(path)[3:-5]
        with open(path) as f:
            fid = json.load(f)
        result["cfg" + scale] = {k: fid.get(k) for k in ("fid", "class_accuracy")}
        drawn = np.load(f"{root}/s{scale}/samples.npz")
        labels = drawn["labels"]
        keep = np.concatenate([np.flatnonzero(labels == k)[:16] for k in np.unique(labels)])
        images[f"{name}_cfg{scale}"] = drawn["images"][keep]
    results[name] = result
with open(f"{out}/results.json", "w") as f:
    json.dump(results, f, indent=1)
np.savez_compressed(f"{out}/images.npz", **images)
print(json.dumps(results, indent=1))
PY
