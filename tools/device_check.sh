#!/usr/bin/env bash
# The GPU checks of a GPU machine, in one run (its packages: tools/device_env.sh):
# the CUDA tests, eager vs deployed AP on the built-in val set, the benchmark (batch 1 and 32, CUDA graphs,
# fp16) and a short QM training run whose iteration time is compared with the benchmark's step.
# Usage on the device: bash tools/device_check.sh [TEACHER_WEIGHTS QUANT_TEACHER_WEIGHTS STUDENT_WEIGHTS]
# Without weights it needs nothing outside the repository: the benchmark's teacher and the QM run's quantized
# teacher are random (time does not depend on their values, except post-processing: random teachers give
# many detections), and the student whose AP is checked is trained here on the built-in data set (500
# iterations, about a minute; QUICK=1 benchmarks a random one).
# Writes its logs and JSON under $OUT (default output/device_check). The whole run fits one 10-minute call
# (each step has its own time limit, the most wanted first).
# QUICK=1: only the CUDA tests and the benchmark at 600 px (batch 1 and 32), in about 3 minutes.
set -uo pipefail
OUT=${OUT:-output/device_check}
source tools/device_env.sh
CONFIGS=projects/QuantMimic/configs
if [ $# -ge 3 ]; then
    QUANT_TEACHER=$2 STUDENT=$3 MODELS=(--teacher-weights "$1" --student-weights "$3")
else
    QUANT_TEACHER=$OUT/weights/teacher_R18_2_FPN_quant.pth STUDENT=$OUT/weights/student/model_final.pth MODELS=()
    mkdir -p "$OUT/weights"
    python3 - "$QUANT_TEACHER" <<'PY'
import sys, torch
from detectron2.modeling import build_model
import quant_mimic  # noqa: F401
from quant_mimic.config import build_config
cfg = build_config("projects/QuantMimic/configs/shapes/teacher_R18_2_FPN_quant.yaml", ["MODEL.DEVICE", "cpu"])
torch.save({"model": build_model(cfg).state_dict()}, sys.argv[1])
PY
fi

step "device"
nvidia-smi -L; python3 -m quant_mimic_tools.collect_env 2>&1 | grep -iE "torch|cuda|gpu|detectron2" | head -8

step "CUDA tests (deployed CUDA graphs / fp16 against the CPU, static NMS, AMP step)"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_deploy.py tests/test_quant_mimic.py \
    tests/test_mimic_loss.py -k "cuda or static or amp or half" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"

if [ "${QUICK:-0}" = 1 ]; then
    step "benchmark (600 px)"
    timeout 150 python3 -m quant_mimic_tools.benchmark --device cuda --sizes 600 --infer-batches 1 32 \
        --repeats 20 --warmup 3 --infer-rounds 2 --skip-train ${MODELS[@]+"${MODELS[@]}"} \
        --json "$OUT/benchmark_cuda.json" 2>&1 | grep -vE "^\[[0-9]|INFO|WARN" | tee "$OUT/benchmark_cuda.txt"
    exit 0
fi

step "QM training iterations (DATALOADER.NUM_WORKERS: the default, from the cores)"
rm -rf /tmp/qm_train
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

if [ ! -f "$STUDENT" ]; then
    step "a student to evaluate: 500 iterations on the built-in data set"
    rm -rf "$OUT/weights/student"
    timeout 240 python3 projects/QuantMimic/train_net.py --config-file $CONFIGS/shapes/student_R18_16_FPN_scratch.yaml \
        MODEL.DEVICE cuda SOLVER.MAX_ITER 500 TEST.EVAL_PERIOD 0 OUTPUT_DIR "$OUT/weights/student" \
        > "$OUT/student_train.log" 2>&1 || { tail -5 "$OUT/student_train.log"; exit 1; }
    grep "copypaste: [0-9]" "$OUT/student_train.log" | tail -1
fi
[ $# -ge 3 ] || MODELS=(--student-weights "$STUDENT")

step "AP: eager vs deployed (exact NMS, CUDA graphs + static NMS, fp16) on the built-in val set"
timeout 100 python3 -m quant_mimic_tools.evaluate_deployed --config-file $CONFIGS/shapes/student_R18_16_FPN_scratch.yaml \
    --weights "$STUDENT" --device cuda --json "$OUT/deployed_ap.json" 2>&1 | grep -vE "^\[|INFO|WARN" | tail -6

step "benchmark"
timeout 180 python3 -m quant_mimic_tools.benchmark --device cuda --sizes 600 --infer-batches 1 32 \
    --repeats 20 --warmup 3 --infer-rounds 2 --steps 20 --rounds 2 --skip-paper-row "${MODELS[@]}" \
    --json "$OUT/benchmark_cuda.json" 2>&1 | grep -vE "^\[[0-9]|INFO|WARN" | tee "$OUT/benchmark_cuda.txt"

