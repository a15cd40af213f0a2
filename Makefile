# Two commands: `make demo` and `make test`. Both create a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
# make test: pytest-xdist processes (a module's tests stay on one; tests/conftest.py). One more than the
# 2 cores: the workflow tests wait on Snakemake and their jobs part of the time (docs/testing.md)
TEST_WORKERS ?= 3

.PHONY: venv bytecode demo test test-configs mutate dry-run lint status bench bench-gpu clean-demo

venv: $(STAMP)

# torch and torchvision come unpinned from the package registry, so pip installs a matching pair.
# pip byte-compiles what it installs one file at a time; compileall does the same on every core instead
# (on 2 cores the set-up takes about 20 s less). A file that does not compile is skipped, as pip skips it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e ".[workflow,test]"
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

# The library's and the rule scripts' bytecode, written ahead: where Python writes none itself
# (PYTHONDONTWRITEBYTECODE), each of a run's processes compiled the library again (5% of the test suite's
# profiled CPU time, docs/testing.md); compileall rewrites only what changed since.
bytecode: venv
	@$(BIN)/python -m compileall -q -j 0 pkg workflow/scripts

demo: venv bytecode
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo
	@echo "Demo finished. In figures/demo/: table1.md (also .csv, .pdf, .png), fig1 (learning curves), fig2/fig9/fig8"
	@echo "(online: random, margin, first-principal-component order), fig3 (transfer), fig4-fig7 and table2-table5,"
	@echo "sec35 (Section 3), leaderboard.md (the remedies). Tables: results/demo/<experiment>/*.parquet."
	@echo "Progress and counts: make status RESULTS=results/demo; an HTML report: snakemake --configfile"
	@echo "config/demo.yaml --report report.html"

test: venv bytecode
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The tests' tiny configs (.test/config/): each linted and dry-run, and one small target built (.test/run_configs.py)
test-configs: venv
	$(BIN)/python .test/run_configs.py --cores $(CORES)

# Mutation testing (mutmut) of the formulas behind the reported numbers (inits, loss terms, probes, the
# stop rule, report statistics) with their fast tests: pyproject.toml [tool.mutmut] and
# [tool.warmstart.mutate], docs/testing.md. About 10 min on 2 cores; not part of CI.
MUTATE_CHILDREN ?= 1
mutate: venv
	@$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[mutate]"
	$(BIN)/python tools/mutate.py --fresh --max-children $(MUTATE_CHILDREN)

# What the paper's config would run, without running it
dry-run: venv bytecode
	$(BIN)/snakemake -n --quiet rules

lint: venv bytecode
	$(BIN)/snakemake --lint

# Per experiment: finished, running, interrupted and missing runs, from the files (results/ and results/demo/)
status: venv
	@$(BIN)/python -m warmstart.jobs.status $(RESULTS)

# Engine vs the authors' data path, stacked seeds vs one run per seed, the workflow's own planning time, and
# the demo's MLP against the machine's floor (benchmarks/README.md has the results). bench-gpu: the same on
# CUDA (engine cases in fp32 and bf16), and training jobs sharing one card.
bench: venv
	$(BIN)/python benchmarks/bench_engine.py --device cpu --bf16 --compile
	$(BIN)/python benchmarks/bench_multiseed.py
	$(BIN)/python benchmarks/bench_plan.py
	$(BIN)/python benchmarks/bench_floor.py $(if $(wildcard results/demo/runs),--results results/demo)

bench-gpu: venv
	$(BIN)/python benchmarks/bench_engine.py --device cuda --compile --breakdown
	$(BIN)/python benchmarks/bench_multiseed.py --device cuda
	$(BIN)/python benchmarks/bench_floor.py --device cuda
	$(BIN)/python benchmarks/bench_jobs_per_gpu.py --device cuda

clean-demo:
	rm -rf results/demo figures/demo
