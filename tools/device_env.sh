# Sourced by the device scripts (tools/device_check.sh, tools/device_study.sh) on a GPU machine: the project
# on PYTHONPATH, $OUT made, step() for headings. The machine's python3 needs a CUDA torch, torchvision,
# detectron2 and requirements.txt: tools/setup_env.sh sets them up where a package index is reachable; on a
# machine without one, put their wheels in $WHEELS (default .whl/ in the repository root): they are
# installed once per machine into /tmp/quantmimic_site, offline.
S=/tmp/quantmimic_site
WHEELS=${WHEELS:-.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1 && [ ! -f $S/.done ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target $S "$WHEELS"/*.whl && touch $S/.done || exit 1
fi
export PYTHONPATH=$S:$PWD/projects/QuantMimic PYTHONUNBUFFERED=1
python3 -c "import torch, torchvision, detectron2" 2>/dev/null || {
    echo "device_env.sh: python3 cannot import torch, torchvision and detectron2: run tools/setup_env.sh, or put" \
        "their wheels in $WHEELS/" >&2
    exit 1
}
mkdir -p "$OUT"
step() { echo; echo "=== $1 ($(date +%T))"; }
