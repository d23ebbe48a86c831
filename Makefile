# The two commands of the README. Both set up .venv first (quick when it is current).
PY := .venv/bin/python

.PHONY: setup main test lint

setup:
	@bash tools/setup_env.sh

# The main job: teacher -> quantized teacher -> students (scratch / mimic / QM) on the built-in data set.
main: setup
	$(PY) -m quant_mimic_tools.pipeline $(ARGS)

# Lint, then the whole test suite (CPU).
test: setup lint
	$(PY) -m pytest $(ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# Mutation testing of the method's core (quantizer, mimic loss, meta-architecture, the QM step) with mutmut:
# slow (7 to 15 min on 2 cores), so not part of `make test`; see projects/QuantMimic/docs/TESTING.md.
.PHONY: mutation
mutation: setup
	$(PY) -m pip install -q -r requirements-dev.txt
	bash dev/mutation/mutation.sh $(ARGS)

# Rewrite the measured tables of README.md, MODEL_ZOO.md and projects/QuantMimic/docs/ from their records
# (projects/QuantMimic/docs/records/*.json); tests/test_docs.py fails when a page and its record differ.
.PHONY: docs
docs: setup
	$(PY) -m quant_mimic_tools.docs $(ARGS)
