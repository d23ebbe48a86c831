#!/usr/bin/env bash
# The GPU checks of a GPU machine, in one run (its packages: tools/device_env.sh):
# the CUDA tests, eager vs deployed AP on the built-in val set, the benchmark (batch 1 and 32, CUDA graphs,
# fp16) and a short QM training run whose iteration time is compared with the benchmark's step.
# Usage on the device: bash tools/device_check.sh TEACHER_WEIGHTS QUANT_TEACHER_WEIGHTS STUDENT_WEIGHTS
# Writes its logs and JSON under $OUT (default output/device_check). The whole run fits one 10-minute call
# (each step has its own time limit, the most wanted first).
# QUICK=1: only the CUDA tests and the benchmark at 600 px (batch 1 and 32), in about 3 minutes.
set -uo pipefail
TEACHER=$1 QUANT_TEACHER=$2 STUDENT=$3
OUT=${OUT:-output/device_check}
source tools/device_env.sh
CONFIGS=projects/QuantMimic/configs

step "device"
nvidia-smi -L; python3 -m quant_mimic_tools.collect_env 2>&1 | grep -iE "torch|cuda|gpu|detectron2" | head -8

step "CUDA tests (deployed CUDA graphs / fp16 against the CPU, static NMS, AMP step)"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_deploy.py tests/test_quant_mimic.py \
    tests/test_mimic_loss.py -k "cuda or static or amp or half" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"

if [ "${QUICK:-0}" = 1 ]; then
    step "benchmark (600 px)"
    timeout 150 python3 -m quant_mimic_tools.benchmark --device cuda --sizes 600 --infer-batches 1 32 \
        --repeats 20 --warmup 3 --infer-rounds 2 --skip-train --teacher-weights "$TEACHER" \
        --student-weights "$STUDENT" --json "$OUT/benchmark_cuda.json" 2>&1 | grep -vE "^\[[0-9]|INFO|WARN" \
        | tee "$OUT/benchmark_cuda.txt"
    exit 0
fi

step "QM training iterations (DATALOADER.NUM_WORKERS: the default, from the cores)"
timeout 150 python3 projects/QuantMimic/train_net.py --config-file $CONFIGS/qm_R_tiny_FPN.yaml \
    MODEL.DEVICE cuda MODEL.QUANT_MIMIC.TEACHER_WEIGHTS "$QUANT_TEACHER" MODEL.QUANT_MIMIC.TEACHER_CHECK_IMAGES 0 \
    SOLVER.MAX_ITER 300 TEST.EVAL_PERIOD 0 SOLVER.CHECKPOINT_PERIOD 100000 OUTPUT_DIR /tmp/qm_train \
    > "$OUT/qm_train.log" 2>&1
cp /tmp/qm_train/metrics.json "$OUT/qm_train_metrics.json"
python3 - "$OUT/qm_train_metrics.json" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
times = [r["time"] for r in rows if "time" in r and r.get("iteration", 0) >= 100]
data = [r["data_time"] for r in rows if "data_time" in r and r.get("iteration", 0) >= 100]
print(f"QM training, iterations 100-300: median {statistics.median(times):.3f} s/iter, data_time {statistics.median(data):.4f} s")
PY
grep -E "NUM_WORKERS" /tmp/qm_train/config.yaml | head -2

step "AP: eager vs deployed (exact NMS, CUDA graphs + static NMS, fp16) on the built-in val set"
timeout 100 python3 tools/deployed_ap.py --config-file $CONFIGS/shapes/student_R18_16_FPN_scratch.yaml \
    --weights "$STUDENT" --device cuda --json "$OUT/deployed_ap.json" 2>&1 | grep -vE "^\[|INFO|WARN" | tail -6

step "benchmark"
timeout 180 python3 -m quant_mimic_tools.benchmark --device cuda --sizes 600 --infer-batches 1 32 \
    --repeats 20 --warmup 3 --infer-rounds 2 --steps 20 --rounds 2 --skip-paper-row --teacher-weights "$TEACHER" --student-weights "$STUDENT" \
    --json "$OUT/benchmark_cuda.json" 2>&1 | grep -vE "^\[[0-9]|INFO|WARN" | tee "$OUT/benchmark_cuda.txt"

