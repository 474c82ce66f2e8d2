#!/usr/bin/env bash
# The GPU check: one script that a machine with a CUDA GPU runs in under ten minutes.
#
#   1. the CUDA tests (`pytest -m cuda`: bf16 autocast on CUDA, the trainer and KV-cache decoding on
#      the GPU, ...);
#   2. vanilla and LTM at GPT-2-small size (configs/scale/gpt2_small_*.yaml, B 8, T 1024, bf16):
#      tokens/s, MFU against the GPU's own bf16 matmul peak measured in the same run, and peak
#      memory; plain, with --compile, and with --activation-checkpointing (bench/scale_configs.py);
#   3. the CUDA memory bench: activation checkpointing's saving at d 512, 8 layers, T 512
#      (bench/memory.py --checkpointing);
#   4. where two GPUs exist, 2-GPU data parallelism (nccl) against one GPU: 10 steps in fp32 must
#      give the same losses within 1e-5 (and with --fsdp, where this ltm has it).
#
# Everything it prints also goes to $OUT/gpu_check.log (default runs/gpu_check). The last line says
# how many parts passed.
#
#   bash bench/gpu.sh              # on the GPU machine
#   bash bench/gpu.sh --dry-run    # anywhere: the same parts on the CPU at tiny shapes (a smoke run)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

if [[ $DRY == 1 ]]; then
    DEVICE=cpu; QUICK=--quick; BATCH=1; GPUS=2; BACKEND=gloo
    echo "dry run: the GPU check's parts on the CPU at tiny shapes"
else
    DEVICE=cuda; QUICK=; BATCH=8; BACKEND=nccl
    GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
    if [[ $GPUS == 0 ]]; then
        echo "error: no CUDA GPU is visible to torch; run on a GPU machine, or pass --dry-run."
        exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
fi
python -c "import torch, ltm; print('torch', torch.__version__, '| ltm', ltm.__version__, '| cuda', torch.version.cuda)"
passed=0; failed=0; skipped=0
part() {  # part NAME COMMAND...: run a part, count it, keep going
    local name=$1; shift
    echo; echo "== $name"
    local start=$SECONDS
    if "$@"; then passed=$((passed + 1)); echo "-- $name: ok ($((SECONDS - start)) s)"
    else failed=$((failed + 1)); echo "-- $name: FAILED ($((SECONDS - start)) s)"; fi
}

part "CUDA tests" python -m pytest -q -n 0 -m cuda -p no:cacheprovider tests

SCALE=(configs/scale/gpt2_small_vanilla.yaml configs/scale/gpt2_small_ltm.yaml)
part "GPT-2 small: plain" python bench/scale_configs.py $QUICK --device $DEVICE --batch $BATCH \
    --precision bf16 --steps 3 --configs "${SCALE[@]}"
part "GPT-2 small: --compile" python bench/scale_configs.py $QUICK --device $DEVICE --batch $BATCH \
    --precision bf16 --steps 3 --no-flops --compile --configs "${SCALE[@]}"
part "GPT-2 small: --activation-checkpointing" python bench/scale_configs.py $QUICK --device $DEVICE \
    --batch $BATCH --precision bf16 --steps 3 --no-flops --activation-checkpointing --configs "${SCALE[@]}"

part "memory: activation checkpointing" python bench/memory.py $QUICK --device $DEVICE --checkpointing \
    --d-model 512 --layers 8 --heads 8 --seq-len 512 --batch 4 --d-latent 512 --inner-steps 2 --no-time

equal_runs() {  # equal_runs EXTRA_FLAGS...: one process against two, 10 steps in fp32
    local dir=$OUT/equality$*; rm -rf "$dir"
    local flags=(--config configs/tiny.yaml --max-steps 10 --eval-every 0 --save-every 0 --precision fp32
                 --device $DEVICE --no-progress --batch-size 8 "$@")
    local one=() flag
    for flag in "${flags[@]}"; do [[ $flag == --fsdp ]] || one+=("$flag"); done
    python -m ltm.train "${one[@]}" --out-dir "$dir/one" >/dev/null &&
    torchrun --standalone --nproc-per-node 2 -m ltm.train "${flags[@]}" --dist-backend $BACKEND \
        --out-dir "$dir/two" >/dev/null &&
    python - "$dir" <<'EOF'
import json, sys
def losses(run):
    return [r["loss"] for r in map(json.loads, open(f"{run}/metrics.jsonl")) if r["split"] == "train"]
one, two = losses(sys.argv[1] + "/one"), losses(sys.argv[1] + "/two")
gap = max(abs(a - b) for a, b in zip(one, two, strict=True))
print(f"10 steps, one process against two: max |loss difference| {gap:.2e} (must be <= 1e-5)")
sys.exit(0 if len(one) == 10 and gap <= 1e-5 else 1)
EOF
}
if [[ $GPUS -ge 2 ]]; then
    part "2-process DDP equals 1 process" equal_runs
    if python -m ltm.train --help | grep -q -- "--fsdp"; then
        part "2-process FSDP equals 1 process" equal_runs --fsdp
    fi
else
    echo; echo "== 2-GPU equality: skipped (one GPU)"; skipped=$((skipped + 1))
fi

echo
echo "gpu check: $passed parts passed, $failed failed, $skipped skipped; log in $OUT/gpu_check.log"
[[ $failed == 0 ]]
