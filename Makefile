# Two entry points for a fresh machine: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every package .venv holds, pinned with its files' sha256 (`make lock` writes it); pyproject keeps open ranges
# for users. The torch CPU wheel it pins lies in WHEELS, which pip is also told to look in.
LOCK   := requirements/dev.lock
WHEELS ?= /opt/wheels

.PHONY: setup demo test test-slow test-latest lock bench clean

setup: $(VENV)/.installed

# A new venv whenever the lock changes: installing over an old one would keep packages the lock dropped.
# --no-deps: the lock is the whole set (pip check says so), nothing is resolved at install time.
$(VENV)/.installed: $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps --find-links $(WHEELS) -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

demo: setup
	$(BIN)/audioclf demo

# The fast suite (about 3½ minutes on 2 idle cores; README: Quick start); end-to-end runs marked `slow` are in test-slow.
test: setup
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# The newest versions pyproject allows (torch stays the locked CPU build), in their own venv, against the tests
# of the deploy path and the models: what a user's fresh `pip install` meets. When the install or a test fails,
# a banner names every package that moved away from the lock.
LATEST       ?= .venv-latest
LATEST_TESTS ?= tests/test_export.py tests/test_quantize.py tests/test_serve.py tests/test_models.py \
                tests/test_cli_deploy.py
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager --find-links $(WHEELS) \
	    "$$(grep -o '^torch==[^ ]*' $(LOCK))" setuptools -e ".[dev]" \
	    || { $(LATEST)/bin/python tools/lockdiff.py $(LOCK) --failed "the install of the newest versions"; exit 1; }
	$(LATEST)/bin/python -m pytest -q -m "not slow" $(LATEST_TESTS) \
	    || { $(LATEST)/bin/python tools/lockdiff.py $(LOCK) --failed "the tests"; exit 1; }
	$(LATEST)/bin/python tools/lockdiff.py $(LOCK)

# Rewrites the lock after a change to pyproject.toml or requirements/dev.in, keeping every pin it can;
# `make lock UPGRADE=--upgrade` moves every package to the newest version allowed. uv (installed into .venv-uv
# on first use) resolves for Python 3.11 on x86_64 Linux against PyPI plus WHEELS and records each file's
# sha256. The README's tested versions are then rewritten from the new lock.
UPGRADE ?=
lock:
	test -x .venv-uv/bin/uv || { $(PYTHON) -m venv .venv-uv && .venv-uv/bin/python -m pip install --quiet uv; }
	.venv-uv/bin/uv pip compile pyproject.toml requirements/dev.in --extra dev $(UPGRADE) --generate-hashes \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links $(WHEELS) \
	    --custom-compile-command "make lock" --output-file $(LOCK)
	$(PYTHON) tools/lockdiff.py $(LOCK) --write-readme README.md

bench: setup
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) $(LATEST) runs demo_run
