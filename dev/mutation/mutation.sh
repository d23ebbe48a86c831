#!/usr/bin/env bash
# Mutation testing of the method's core with mutmut (projects/QuantMimic/docs/TESTING.md): `make mutation`.
#
# mutmut imports mutated code only from ./, src/ or source/, so the run happens in a staging copy,
# build/mutation/, where the package sits at the top level (quant_mimic/), next to tests/ and the configs
# the tests read (projects/QuantMimic/configs/). The files to mutate and the tests to run are the
# [mutmut] section of setup.cfg, copied there. The tree you work in is never modified.
#
#   bash dev/mutation/mutation.sh          stage a fresh copy, run every mutant, print the score
#   bash dev/mutation/mutation.sh score    print the score of the last run again (and the survivors)
#
# Environment: MUTATION_JOBS (mutants run at once, default 2), MUTATION_SOURCE (the checkout whose code
# and tests are staged, default this one), MUTATION_STAGE (default build/mutation).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/dev/mutation
SOURCE=${MUTATION_SOURCE:-$REPO}
STAGE=${MUTATION_STAGE:-$REPO/build/mutation}
JOBS=${MUTATION_JOBS:-2}
MUTMUT=$REPO/.venv/bin/mutmut
PY=$REPO/.venv/bin/python

if [ "${1:-run}" = "run" ]; then
    rm -rf "$STAGE"
    mkdir -p "$STAGE/projects/QuantMimic"
    cp -r "$SOURCE/projects/QuantMimic/quant_mimic" "$STAGE/quant_mimic"
    cp -r "$SOURCE/projects/QuantMimic/configs" "$STAGE/projects/QuantMimic/configs"
    cp -r "$SOURCE/tests" "$STAGE/tests"
    cp "${MUTATION_SETUP_CFG:-$REPO/setup.cfg}" "$STAGE/setup.cfg"
    find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
    # one torch thread per mutant: JOBS mutants use JOBS cores
    (cd "$STAGE" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore "$MUTMUT" run --max-children "$JOBS")
fi
cd "$STAGE"
"$PY" "$HERE/mutation_score.py" --equivalents "$HERE/mutation_equivalents.txt"
