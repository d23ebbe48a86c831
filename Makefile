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
