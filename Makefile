# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean-demo

$(STAMP): constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The whole study on the embedded synthetic demo data (every table, figure and the HTML report).
demo: $(STAMP)
	$(BIN)/snakemake all --profile workflow/profiles/demo

## The test suite, on the real data in ../shared/data.
test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --durations=15 tests

bench: $(STAMP)
	$(BIN)/ugpcl bench --profile demo --method ugpcl

clean-demo:
	rm -rf results/demo reports/demo data/raw/demo
