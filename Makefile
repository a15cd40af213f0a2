# Two commands: `make demo` and `make test`. Both create a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: venv demo test dry-run lint bench bench-gpu clean-demo

venv: $(STAMP)

# torch and torchvision come unpinned from the package registry, so pip installs a matching pair
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[workflow,test]"
	touch $(STAMP)

demo: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo
	@echo "Demo finished. Table 1: figures/demo/table1.md (also .csv and .pdf); figures/demo/fig1.pdf (learning"
	@echo "curves), fig2/fig9/fig8.pdf (online: random, margin, first-principal-component order), fig3.pdf (transfer)"
	@echo "Tables: results/demo/<experiment>/{summary,epochs,rounds}.parquet"

test: venv
	$(BIN)/python -m pytest

# What the paper's config would run, without running it
dry-run: venv
	$(BIN)/snakemake -n --quiet rules

lint: venv
	$(BIN)/snakemake --lint

# Engine vs the authors' data path, stacked seeds vs one run per seed, and the workflow's own planning time
# (benchmarks/README.md has the results). bench-gpu: the same engine cases on CUDA, fp32 and bf16.
bench: venv
	$(BIN)/python benchmarks/bench_engine.py --device cpu --bf16 --compile
	$(BIN)/python benchmarks/bench_multiseed.py
	$(BIN)/python benchmarks/bench_plan.py

bench-gpu: venv
	$(BIN)/python benchmarks/bench_engine.py --device cuda --compile --breakdown
	$(BIN)/python benchmarks/bench_multiseed.py --device cuda

clean-demo:
	rm -rf results/demo figures/demo
