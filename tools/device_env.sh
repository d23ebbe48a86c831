# Sourced by the device scripts: the packages the lent GPU machine lacks, from the wheels in .whl/ (see
# ../shared/GPU.md), installed once per machine; the project on PYTHONPATH; $OUT made.
S=/tmp/quantmimic_site
[ -f $S/.done ] || { python3 -m pip install -q --no-index --no-deps --no-compile --target $S .whl/*.whl && touch $S/.done; } || exit 1
export PYTHONPATH=$S:$PWD/projects/QuantMimic PYTHONUNBUFFERED=1
mkdir -p "$OUT"
step() { echo; echo "=== $1 ($(date +%T))"; }
