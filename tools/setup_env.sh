#!/usr/bin/env bash
# One-command set-up of .venv: torch/torchvision, detectron2, QuantMimic and its dependencies.
# Re-running it is quick and changes nothing once the set-up is current.
#
# detectron2 comes from the first source that works:
#   1. a detectron2 that .venv can already import (bring your own build),
#   2. upstream GitHub at a pinned commit, when github.com answers within a few seconds (compiled ops),
#   3. PyPI's pb1-detectron2==0.6 sdist, checked by sha256, built as a pure-Python wheel with named
#      fixes (tools/build_detectron2.py). Only the compiled-only ops are missing there.
#
# The Python that creates .venv: $PYTHON if set, else the newest of python3.13 ... python3.10 on PATH.
# A first set-up refuses to start with less than $QUANTMIMIC_SETUP_NEED_GB (default 8) GB free; 0 skips that.
# `bash tools/setup_env.sh --print-python` prints that choice and exits, before anything else.
set -euo pipefail

SUPPORTED_PYTHONS="python3.13 python3.12 python3.11 python3.10"  # newest first

runs_python() {  # $1 starts and has venv (a pyenv shim of a version that is not selected does not)
    "$1" -c "import venv" >/dev/null 2>&1
}

choose_python() {  # prints the interpreter's path; needs no other command (tests run it with a bare PATH)
    local path name
    if [ -n "${PYTHON:-}" ]; then
        if path=$(command -v "$PYTHON") && runs_python "$path"; then
            echo "$path"
            return 0
        fi
        echo "set-up: PYTHON=$PYTHON does not run as a Python with venv; point it at a Python 3.10 to 3.13." >&2
        return 2
    fi
    for name in $SUPPORTED_PYTHONS; do
        if path=$(command -v "$name") && runs_python "$path"; then
            echo "$path"
            return 0
        fi
    done
    echo "set-up: no working Python 3.10 to 3.13 on PATH: install one (e.g. python3.12 with its venv" \
        "module, on Debian/Ubuntu the python3.12-venv package) or set PYTHON to its path." >&2
    return 2
}

case "${1:-}" in
    --print-python)
        choose_python || exit
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: bash tools/setup_env.sh [--print-python]" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.quantmimic-setup
UPSTREAM_URL=https://github.com/facebookresearch/detectron2.git
UPSTREAM_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833  # upstream main, 2026-06-06

want=$(cat requirements.txt setup.cfg pyproject.toml tools/build_detectron2.py tools/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$want" ]; then
    echo "set-up: .venv is current (detectron2 from $(sed -n 2p "$STAMP"))"
    exit 0
fi

pip_quiet() {  # pip without the per-package notes about this machine's local index folders
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    # A first set-up fills about 6 GB (.venv here: 6.1 GB, torch's CUDA libraries most of it), and pip
    # unpacks the wheels before it installs them: refuse early, in one sentence, not half-way in pip.
    NEED_GB=${QUANTMIMIC_SETUP_NEED_GB:-8}
    free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ "$NEED_GB" -gt 0 ] && [ "$free_gb" -lt "$NEED_GB" ]; then
        echo "set-up: only $free_gb GB free on the disk of $(pwd), and a first set-up needs about $NEED_GB GB" \
            "(torch and its libraries): free some space and run it again." >&2
        exit 2
    fi
    how="the newest of $SUPPORTED_PYTHONS on PATH"
    [ -z "${PYTHON:-}" ] || how="\$PYTHON"
    PYTHON=$(choose_python) || exit
    echo "set-up: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1); $how)"
    "$PYTHON" -m venv "$VENV"
fi
echo "set-up: installing requirements (torch is the big one: minutes the first time)"
pip_quiet install -q --upgrade "pip>=23" "setuptools>=70" wheel
pip_quiet install -q -r requirements.txt

build_tag=$(sed -n 's/^BUILD_TAG = "\(.*\)"$/\1/p' tools/build_detectron2.py)
installed=$("$VENV/bin/python" -c '
try:
    import detectron2
except ImportError:
    print("none")
else:
    try:
        from detectron2._missing_ops import BUILD
        print("pure", BUILD.split()[-1])
    except ImportError:
        print("own", detectron2.__file__)
' 2>/dev/null || echo none)

if [ "$installed" = "pure $build_tag" ]; then
    source="PyPI pb1-detectron2==0.6, pure-Python build $build_tag (tools/build_detectron2.py)"
elif [ "${installed%% *}" = "own" ]; then
    source="already importable: ${installed#own }"
elif [ "${installed%% *}" != "pure" ] && timeout 8 git ls-remote "$UPSTREAM_URL" HEAD >/dev/null 2>&1 \
        && pip_quiet install -q --no-build-isolation "git+$UPSTREAM_URL@$UPSTREAM_COMMIT"; then
    source="upstream GitHub $UPSTREAM_COMMIT (compiled)"
else
    echo "set-up: building detectron2 0.6 from PyPI's pb1-detectron2 sdist (github.com not used or not reachable)"
    wheel=$("$VENV/bin/python" tools/build_detectron2.py --cache .build-cache --wheel-dir .build-cache/wheels \
            2> >(grep -v '^WARNING: Location' >&2) | tail -n1)
    pip_quiet install -q --no-deps --force-reinstall "$wheel"
    source="PyPI pb1-detectron2==0.6, pure-Python build $build_tag (tools/build_detectron2.py)"
fi

pip_quiet install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m quant_mimic_tools.collect_env --short
printf '%s\n%s\n' "$want" "$source" > "$STAMP"
echo "set-up: done in $(( $(date +%s) - start )) s; detectron2 from: $source"
