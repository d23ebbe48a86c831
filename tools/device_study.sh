#!/usr/bin/env bash
# The study on a GPU machine (its packages: tools/device_env.sh): students trained side by side (--jobs) on
# teachers carried from another machine, so that every seed shares them; resumable on the next call.
# Usage on the device: bash tools/device_study.sh TEACHERS_TAR SECONDS [study options, e.g. --only main --jobs 15]
#   TEACHERS_TAR: tar.xz of teachers/<name>/{model_final.pth,metrics.json,last_checkpoint,config.yaml}, the
#                 folder layout of a study's <output>/teachers
#   SECONDS:      stop training after this long (each run then resumes from its last checkpoint next time)
# Writes under $OUT (default output/device_study): study.log, study.tar.gz (the tables, figures and every
# run's log and metrics, no checkpoints) and students.tar (the students' final weights, teachers left out).
set -uo pipefail
TEACHERS=$1 LIMIT=$2
shift 2
OUT=${OUT:-output/device_study}
source tools/device_env.sh
STUDY=output/study_gpu
mkdir -p $STUDY
[ -f $STUDY/teachers/teacher_R18_2_FPN_quant/model_final.pth ] || tar -xJf "$TEACHERS" -C $STUDY || exit 1

step "study, at most $LIMIT s"
nvidia-smi -L
timeout "$LIMIT" python3 -m quant_mimic_tools.study --output-dir $STUDY "$@" 2>&1 | grep -vE "copypaste: (Task|AP,)|Warning|warn" | tee "$OUT/study.log"
pkill -f train_net.py; sleep 3

step "report"
python3 -m quant_mimic_tools.study --output-dir $STUDY --report-only "$@" 2>&1 | grep -vE "Warning|warn" | tail -25
tar -czf "$OUT/study.tar.gz" -C $STUDY --exclude='*.pth' --exclude='events.*' --exclude=teachers .
(cd $STUDY && tar -cf - $(ls -d scratch*_seed*/model_final.pth quant_only*_seed*/model_final.pth \
    ./*_seed*/student_final.pth 2>/dev/null)) > "$OUT/students.tar"
ls -la "$OUT"
