#!/usr/bin/env bash
# For the day a GPU is lent: one script, under 10 minutes on one H100, never in CI.
#
#   1. whole-model boomerang distillation of SmolLM2-135M (the paper's loss), bf16, one GPU;
#   2. block-local distillation of the same student (--mode local) on the same GPU;
#   3. with two GPUs or more (or ALLOW_CPU): 2-process DDP (torchrun) against 1 process at the same global batch,
#      fp32, loss compared step by step;
#   4. the same 2 processes sharded (FSDP2, configs/accelerate_fsdp_cpu.yaml's settings), against DDP.
#
# Prints tokens/s (steady state: from the first logged step to the last) and MFU against the GPU's
# dense bf16 peak. Needs the project's venv with a CUDA build of torch (`make setup TORCH=torch`).
#
#   bash bench/gpu_check.sh                    # defaults: STEPS=40 BATCH=16 SEQ=1024 TEACHER=smollm2
#   ALLOW_CPU=1 TEACHER=demo STEPS=6 BATCH=4 SEQ=64 PRECISION=fp32 bash bench/gpu_check.sh   # plumbing, on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-40}
BATCH=${BATCH:-16}
SEQ=${SEQ:-1024}
TEACHER=${TEACHER:-smollm2}
PRECISION=${PRECISION:-bf16}
OUT=${OUT:-$(mktemp -d -t boomerang-gpu-check.XXXXXX)}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 1 ] && [ -z "${ALLOW_CPU:-}" ]; then
  echo "gpu_check: no CUDA device here (set ALLOW_CPU=1 to check the plumbing on a CPU)." >&2
  exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "gpu_check: $NGPU GPU(s); teacher $TEACHER, $STEPS steps of $BATCH x $SEQ tokens, $PRECISION; runs in $OUT"

# Teacher layers 0-2, every other layer from 3, then 28-29: the shipped SmolLM2 student's rule.
COMMON=(--teacher "$TEACHER" --data demo --keep-first 3 --every 2 --keep-last 2 --seq-len "$SEQ"
        --warmup 5 --save-every 100000 --log-every 5 --seed 0)

summary() {  # summary LABEL RUN_DIR MODE: tokens/s and MFU from the run's log.jsonl
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
import torch
from transformers import AutoConfig
from boomerang.core import LayerMapping
from boomerang.zoo import resolve_teacher
sys.path.insert(0, "bench")
from bench_distill import PEAK_BF16, train_flops_per_token  # one FLOP count for every benchmark

label, run, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
saved = json.loads((run / "config.json").read_text())
log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
first, last = log[0], log[-1]
if last["step"] - first["step"] < 2 or last["elapsed_s"] <= first["elapsed_s"]:
    # The log keeps elapsed time to 10 ms: fewer than 2 steps between its lines are too few to time.
    print(f"{label}: too few logged steps to time ({first['step']}-{last['step']}); raise STEPS")
    sys.exit(0)
tok_s = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
cfg = AutoConfig.from_pretrained(resolve_teacher(saved["teacher"]))
L, T = cfg.num_hidden_layers, saved["seq_len"]
mapping = LayerMapping.from_rule(L, saved["keep_first"], saved["every"], saved["keep_last"])
flops = train_flops_per_token(cfg, L, T, False)  # the teacher's forward
if mode == "local":  # forward and backward of each trained (two-layer) student layer, no head
    trained = sum(len(b) > 1 for b in mapping.blocks)
    flops += train_flops_per_token(cfg, trained, T, True) - train_flops_per_token(cfg, 0, T, True)
else:  # the student's forward and backward through its head
    flops += train_flops_per_token(cfg, mapping.num_student_layers, T, True)
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
peak = next((p for k, p in PEAK_BF16.items() if k in name), None)
world = last.get("world_size", 1)
mfu = f", MFU {flops * tok_s / world / peak:.1%} of {peak / 1e12:.0f} TFLOP/s per GPU" if peak else ""
print(f"{label}: {name}, {tok_s:,.0f} tokens/s over steps {first['step']}-{last['step']} "
      f"({flops * tok_s / 1e12:.1f} TFLOP/s{mfu}); loss {first['loss']:.4f} -> {last['loss']:.4f}")
EOF
}

# same_losses LABEL REFERENCE_NAME REFERENCE_RUN RUN: the largest relative difference of their per-step losses.
same_losses() {
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
label, ref_name, *runs = sys.argv[1:]
ref, got = ([json.loads(x) for x in (Path(p) / "log.jsonl").read_text().splitlines()] for p in runs)
worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ref, got))
print(f"{label}: world size {got[-1]['world_size']}, {len(got)} steps, largest relative loss difference to "
      f"{ref_name} {worst:.2e} ({'ok' if worst < 1e-4 else 'DIFFERENT'})")
EOF
}

echo "== 1. whole-model boomerang distillation, 1 process"
"$PY" -m boomerang distill "${COMMON[@]}" --steps "$STEPS" --batch-size "$BATCH" --precision "$PRECISION" \
  --out "$OUT/global"
summary "whole-model, $PRECISION" "$OUT/global" global

echo "== 2. block-local distillation, 1 process"
"$PY" -m boomerang distill "${COMMON[@]}" --steps "$STEPS" --batch-size "$BATCH" --mode local --out "$OUT/local"
summary "block-local" "$OUT/local" local

if [ "$NGPU" -ge 2 ] || [ -n "${ALLOW_CPU:-}" ]; then  # on CPUs: 2 gloo processes
  echo "== 3. 2-process DDP against 1 process, same global batch, fp32"
  DDP=(--steps 10 --log-every 1 --precision fp32)
  "$PY" -m boomerang distill "${COMMON[@]}" "${DDP[@]}" --batch-size "$BATCH" --out "$OUT/one"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m boomerang distill "${COMMON[@]}" "${DDP[@]}" \
    --batch-size $((BATCH / 2)) --out "$OUT/two"
  same_losses "DDP, 2 processes" "1 process" "$OUT/one" "$OUT/two"
  summary "whole-model, 2-process DDP, fp32" "$OUT/two" global
  echo "== 4. the same 2 processes sharded (FSDP2) against DDP"
  "$PY" -m accelerate.commands.launch --config_file configs/accelerate_fsdp_cpu.yaml --main_process_port 0 \
    -m boomerang distill "${COMMON[@]}" "${DDP[@]}" --batch-size $((BATCH / 2)) --out "$OUT/fsdp"
  same_losses "FSDP2, 2 processes" "DDP" "$OUT/two" "$OUT/fsdp"
  summary "whole-model, 2-process FSDP2, fp32" "$OUT/fsdp" global
else
  echo "== 3. skipped: DDP needs 2 GPUs, this machine has $NGPU"
fi
