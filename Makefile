# Two commands: `make demo` and `make test`. Both create a local virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: venv demo test dry-run lint clean-demo

venv: $(STAMP)

# torch and torchvision come unpinned from the package registry, so pip installs a matching pair
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[workflow,test]"
	touch $(STAMP)

demo: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml
	@echo
	@echo "Demo finished. Table 1: figures/demo/table1.md (also .csv and .pdf); Figure 1: figures/demo/fig1.pdf"
	@echo "Per-run and per-epoch tables: results/demo/table1/{summary,epochs}.parquet, results/demo/fig1/"

test: venv
	$(BIN)/python -m pytest

# What the paper's config would run, without running it
dry-run: venv
	$(BIN)/snakemake -n --quiet rules

lint: venv
	$(BIN)/snakemake --lint

clean-demo:
	rm -rf results/demo figures/demo
