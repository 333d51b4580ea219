#!/usr/bin/env bash
# One prepared session on a lent GPU machine (issue 21's GPU check, the GPU tests, and issue 18's
# intervention grids on the machine's GPU and CPU cores), in one command of at most ~580 s:
#
#   bash bench/gpu_session.sh            # from the repo root, on the GPU machine
#
# That machine has python3 with torch + CUDA but not the project's other dependencies: they travel
# as wheels in .whl/ (docs/cluster.md says which and how). Ray does not travel (79 MB), so the
# grids run with `ungrok sweep --executor processes`. Everything it measures lands in $OUT
# (default ./gpu_out): logs, JSON, and a small tar of each grid's analysis (summaries, verdict,
# report), not the stores (too large to bring back). Every step has its own time limit and runs
# whether or not the one before passed; the grid gets what is left of the deadline.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
DEADLINE=${DEADLINE:-570}  # seconds from the start by which everything, tar included, is done
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
say() { echo "[gpu_session +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/session.log"; }

[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  > "$OUT/pip.log" 2>&1 || say "wheel install failed (see pip.log)"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
lscpu > "$OUT/lscpu.txt" 2>&1
python3 -c "import torch, deepspeed, transformer_lens, zarr; print(torch.__version__, torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$OUT/session.log"

say "GPU tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -s tests/integration/test_paper_gpu.py > "$OUT/gpu_tests.log" 2>&1
GPU_OK=$?
say "GPU tests rc=$GPU_OK"

say "paper preset throughput"
timeout 60 python3 bench/paper_throughput.py --steps 20 --warmup 3 --out "$OUT/paper_throughput.json" \
  > "$OUT/paper_throughput.log" 2>&1; say "rc=$?"
say "DeepSpeed vs plain on the GPU"
timeout 60 python3 bench/train_throughput.py ${TT_ARGS_A:---device cuda --steps 300 --warmup 20} --out "$OUT/train_throughput_default.json" \
  > "$OUT/train_throughput_default.log" 2>&1; say "rc=$?"
timeout 50 python3 bench/train_throughput.py ${TT_ARGS_B:---device cuda --precision bf16 --d-model 512 --n-layers 8 --n-ctx 256 --batch 64 --steps 100 --warmup 10} --out "$OUT/train_throughput_large.json" \
  > "$OUT/train_throughput_large.log" 2>&1; say "rc=$?"

# The intervention grids (examples/interventions.toml and the two timing windows), fp32 on every
# device so the GPU's and the CPU's cells compute alike; the three sweeps side by side.
# All cells on the GPU when its tests passed (one device for every cell), else on the CPU cores.
if [ "$GPU_OK" = 0 ]; then W="6 3 3"; GF=1; else W="8 4 4"; GF=0; fi
read -r WI WE WL <<< "$W"
rm -rf /tmp/grids /tmp/sw; mkdir -p /tmp/grids
for f in interventions rescue_timing_early rescue_timing_late; do
  sed 's/^\[train\]$/[train]\nprecision = "fp32"/' "${GRIDS:-examples}/$f.toml" > "/tmp/grids/$f.toml"
done
GRID_S=$(( $(left) - 60 ))
say "grids: ${GRID_S} s, workers $W, on the GPU: $GF"
timeout -s INT "$GRID_S" python3 -m cluster.cli sweep /tmp/grids/interventions.toml --out /tmp/sw/interventions \
  --executor processes --workers "$WI" --gpu-workers $(( GF * WI )) > "$OUT/sweep_interventions.log" 2>&1 &
timeout -s INT "$GRID_S" python3 -m cluster.cli sweep /tmp/grids/rescue_timing_early.toml --out /tmp/sw/early \
  --executor processes --workers "$WE" --gpu-workers $(( GF * WE )) > "$OUT/sweep_early.log" 2>&1 &
timeout -s INT "$GRID_S" python3 -m cluster.cli sweep /tmp/grids/rescue_timing_late.toml --out /tmp/sw/late \
  --executor processes --workers "$WL" --gpu-workers $(( GF * WL )) > "$OUT/sweep_late.log" 2>&1 &
wait
say "grids stopped"

P=examples/prereg_paper_interventions.toml
timeout 40 python3 -m cluster.cli verdict /tmp/sw/interventions /tmp/sw/early /tmp/sw/late --prereg $P \
  --json /tmp/sw/verdict.json > "$OUT/verdict.log" 2>&1; say "verdict rc=$?"
timeout "$(( $(left) - 15 ))" python3 -m cluster.cli report /tmp/sw/interventions /tmp/sw/early /tmp/sw/late \
  --prereg $P --out /tmp/sw/report > "$OUT/report.log" 2>&1; say "report rc=$?"
(cd /tmp/sw && tar -czf "$OUT/grids.tar.gz" --exclude='*/store.zarr' --exclude='dataset' \
  --exclude='*/weights' --exclude='*/checkpoints' --exclude='*.lock' .) ; say "tar rc=$? $(du -h "$OUT/grids.tar.gz" | cut -f1)"
