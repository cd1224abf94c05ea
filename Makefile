# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Install routes (README "Install"): TORCH=keep uses the torch already installed beside $(PYTHON)
# (e.g. a CUDA build); `make wheels` collects every wheel for a target, `make install-offline`
# installs from them with no network.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

# Where torch comes from: pinned (constraints.txt's torch==2.13.0) or keep ($(PYTHON)'s own torch).
TORCH ?= pinned
# With TORCH=pinned: take that torch release from this index instead, e.g. PyTorch's
# https://download.pytorch.org/whl/cu126 (PyPI's Linux build of 2.13.0 is a CUDA 13 one).
TORCH_INDEX ?=
# A `pip list --format=freeze` of the target environment: those packages are used as installed there.
KEEP  ?=
# The target of `make wheels` (default: this machine): Python version, glibc, architecture.
PY    ?= $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
GLIBC ?= $(shell $(PYTHON) -c 'import platform; print(platform.libc_ver()[1] or "2.17")')
ARCH  ?= $(shell uname -m)
PY    := $(PY)
GLIBC := $(GLIBC)
ARCH  := $(ARCH)
WHEEL_DIR ?= .whl
WHEELS    ?= $(WHEEL_DIR)/py$(PY)-glibc$(GLIBC)-$(ARCH)-torch-$(TORCH)$(if $(TORCH_INDEX),-$(notdir $(TORCH_INDEX)))$(if $(KEEP),-keep)

ifeq ($(filter $(TORCH),pinned keep),)
$(error TORCH=$(TORCH): use TORCH=pinned (torch==2.13.0 from constraints.txt) or TORCH=keep (the torch beside $(PYTHON)))
endif
ifneq ($(TORCH_INDEX),)
ifneq ($(TORCH),pinned)
$(error TORCH_INDEX goes with TORCH=pinned: TORCH=keep installs no torch)
endif
endif
PIN_ARGS := $(if $(filter keep,$(TORCH)),--drop torch) $(if $(KEEP),--keep $(KEEP))
PIP_FROM := $(if $(OFFLINE),--no-index --find-links $(WHEELS))
STAMP    := $(VENV)/.installed-torch-$(TORCH)

.PHONY: demo test install install-offline wheels bench clean-demo authors

$(STAMP): constraints.txt pyproject.toml $(KEEP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-torch-*
	$(BIN)/python tools/wheels.py layer $(BIN)/python $(if $(filter keep,$(TORCH)),$(PYTHON))
	$(if $(filter keep,$(TORCH)),$(BIN)/python -c 'import torch; print("keeping torch", torch.__version__, "from", torch.__file__)')
	$(PYTHON) tools/wheels.py pins constraints.txt $(PIN_ARGS) > $(VENV)/constraints.txt
	$(if $(and $(TORCH_INDEX),$(if $(OFFLINE),,y)),$(BIN)/pip install --quiet --disable-pip-version-check --index-url $(TORCH_INDEX) -c $(VENV)/constraints.txt torch)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_FROM) -c $(VENV)/constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Install from the wheels of `make wheels` (same variables), with no index and no network.
install-offline:
	test -f $(WHEELS)/.complete || { echo "no wheels in $(WHEELS): run 'make wheels' with the same variables first"; exit 1; }
	$(MAKE) install OFFLINE=1

## Every wheel the project needs for PY/GLIBC/ARCH (default: this machine) into $(WHEELS);
## no network when the folder already holds the same set.
wheels:
	$(PYTHON) tools/wheels.py collect constraints.txt $(WHEELS) --python $(PY) --glibc $(GLIBC) --arch $(ARCH) $(PIN_ARGS) \
	    $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX))

## The whole study on the embedded synthetic demo data (every table, figure and the HTML report).
demo: $(STAMP)
	$(BIN)/snakemake all --profile workflow/profiles/demo

## The test suite, on the real data in ../shared/data; with the wheels of this machine, it also
## installs the project offline into fresh venvs (tests/test_install.py).
test: $(STAMP) $(if $(filter pinned,$(TORCH)),wheels)
	$(if $(filter pinned,$(TORCH)),UGPCL_WHEELS=$(abspath $(WHEELS))) $(BIN)/pytest -n 2 --dist loadfile --durations=15 tests

bench: $(STAMP)
	$(BIN)/ugpcl bench --profile demo --method ugpcl

## The authors' code (taovv/UGPCL at the paper's commit: codes/, configs/, train.py) in
## .authors/UGPCL and its requirements as wheels in .authors/wheels, for tools/authors_bench.py.
## Pure-Python wheels: the same folder installs on another Python (the GPU machine's 3.12) with
## pip install --no-deps --no-index --target DIR .authors/wheels/*.whl. Never committed.
AUTHORS_REPO   ?= https://github.com/taovv/UGPCL
AUTHORS_COMMIT := 5980405b15ef1bc139be0447647a213b5a5f30b9
authors:
	test -d .authors/UGPCL.git || git clone --quiet --bare $(AUTHORS_REPO) .authors/UGPCL.git
	rm -rf .authors/UGPCL.tmp && mkdir -p .authors/UGPCL.tmp
	git -C .authors/UGPCL.git archive $(AUTHORS_COMMIT) codes configs train.py | tar -x -C .authors/UGPCL.tmp
	echo $(AUTHORS_COMMIT) > .authors/UGPCL.tmp/COMMIT
	rm -rf .authors/UGPCL && mv .authors/UGPCL.tmp .authors/UGPCL
	$(PYTHON) -m pip wheel --quiet --disable-pip-version-check --no-deps -w .authors/wheels -r tools/authors-requirements.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --no-index --upgrade --target .authors/site .authors/wheels/*.whl
	@echo "run: PYTHONPATH=.authors/site $(PYTHON) tools/authors_bench.py run --device cuda (torch and torchvision from $(PYTHON))"

clean-demo:
	rm -rf results/demo reports/demo data/raw/demo
