#!/usr/bin/env bash
# The engine on a GPU, in one go (about 5 minutes on one H200): throughput against a plain PyTorch
# loop, frozen extraction, mixed precision on/off, DataLoader workers 0 vs N, a 1-GPU torchrun run,
# and the scale benchmark at 224 px. Results in $OUT/GPU.md, logs beside it.
#
#   OUT=/path/to/results bash bench/gpu.sh [DATA]
#
# DATA: a folder holding Fashion-MNIST's *-idx3-ubyte.gz files (default: data/fashion-mnist in the
# repository, else /usr/share/datasets/fashion-mnist), or any dataset tlgui reads.
# The Python environment (torch, torchvision, the requirements) must be installed already; no network.
# DEVICE=cpu SMALL=1 runs the same steps with tiny sizes on a CPU, to check the script itself.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
DEVICE=${DEVICE:-cuda}
DATA=${1:-}
if [ -z "$DATA" ]; then
  if [ -e data/fashion-mnist/train-images-idx3-ubyte.gz ]; then DATA=data/fashion-mnist; else DATA=/usr/share/datasets/fashion-mnist; fi
fi
mkdir -p "$OUT"
export TLGUI_CACHE_DIR="$OUT/feature-cache" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "${SMALL:-0}" = 1 ]; then
  N=128; STEPS=3; SIZE=32; SCALE_SIZES=300,600; SCALE_PX=32; T_GPU=400; T_RUN=300; T_SCALE=400
else
  N=4096; STEPS=20;  # 20 + 3 warm-up steps stay inside one epoch (31 steps of 128): no last-batch shape in the timing
  SIZE=224; SCALE_SIZES=1000,4000,16000; SCALE_PX=224; T_GPU=170; T_RUN=60; T_SCALE=100
fi
{
  echo "# tlgui on a GPU"
  echo
  echo "\`OUT=... bash bench/gpu.sh $DATA\` on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ)."
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
} > "$OUT/GPU.md" 2>&1

echo "== throughput rows" | tee -a "$OUT/progress.log"
timeout "$T_GPU" python bench/gpu.py --data "$DATA" --out "$OUT/gpu" --device "$DEVICE" --n "$N" --steps "$STEPS" \
  --size "$SIZE" > "$OUT/gpu.log" 2>&1
echo "gpu.py exit $?" >> "$OUT/progress.log"
cat "$OUT/gpu/GPU.md" >> "$OUT/GPU.md" 2>/dev/null

echo "== 1-GPU torchrun" | tee -a "$OUT/progress.log"
RUNDATA=$DATA
[ -e "$DATA/train-images-idx3-ubyte.gz" ] && RUNDATA="$OUT/gpu/data/fashion-$N"
start=$(date +%s)
timeout "$T_RUN" python -m torch.distributed.run --standalone --nproc-per-node 1 -m tlgui train "$RUNDATA" \
  --out "$OUT/torchrun" --epochs 2 --image-size "$SIZE" --device "$DEVICE" > "$OUT/torchrun.log" 2>&1
rc=$?
{
  echo
  echo "## torchrun --nproc-per-node 1 -m tlgui train (2 epochs, frozen, $SIZE px)"
  echo
  echo "exit status $rc in $(( $(date +%s) - start )) s; bundle: $( [ -e "$OUT/torchrun/model.zip" ] && echo written || echo missing )"
  echo '```'
  grep -E "^(training on|epoch|validation|done|error)" "$OUT/torchrun.log" | tail -8
  echo '```'
} >> "$OUT/GPU.md"

echo "== scale at $SCALE_PX px" | tee -a "$OUT/progress.log"
timeout "$T_SCALE" python bench/scale.py --sizes "$SCALE_SIZES" --image-size "$SCALE_PX" --clock wall --no-variants \
  --threads 8 --device "$DEVICE" --data "$DATA" --work "$OUT/scale-work" --write --report "$OUT/SCALE-gpu.md" \
  > "$OUT/scale.log" 2>&1
echo "scale.py exit $?" >> "$OUT/progress.log"
{ echo; echo "## bench/scale.py on this machine"; echo; sed '1d' "$OUT/SCALE-gpu.md" 2>/dev/null || echo "(no rows)"; } >> "$OUT/GPU.md"
rm -rf "$OUT/scale-work" "$OUT/gpu/data" "$OUT/gpu/runs" "$OUT/feature-cache"
echo "done: $OUT/GPU.md"
