# The README's two commands: `make demo` (the main job) and `make test`. Both set up .venv first.
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/edgeticket demo

test: setup
	.venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadgroup --no-loadscope-reorder

bench: setup
	.venv/bin/python benchmarks/speedup.py
