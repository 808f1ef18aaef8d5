# Ethical Clone Studio. `make run` starts the demo; `make test` runs the tests. Both install what is missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg redis-server nginx libnginx-mod-rtmp espeak-ng libespeak-ng1 fonts-dejavu-core \
	fonts-wqy-microhei tesseract-ocr tesseract-ocr-eng chromium docker-compose postgresql sox
# The CPU build of torch lies on disk here; pip must look there first so it never pulls CUDA wheels.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
PYTEST_ARGS ?=

.PHONY: setup apt venv run test bench lint clean cycle
setup: apt venv

# Debian packages: install only the missing ones, so a second run costs nothing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(FIND_LINKS) torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check $(FIND_LINKS) -c constraints.txt -e '.[dev,gpu]'
	# The watermark benchmark's peer. Without --no-deps it pulls opencv-python, which would overwrite the
	# opencv-contrib-python build that mediapipe needs; what its DWT-DCT method imports is installed above.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps invisible-watermark==0.2.0
	@touch $@

run: setup
	$(BIN)/studio demo

# Two passes: the suite on TEST_WORKERS workers (a file's tests stay together on one, so its module fixtures start
# once), then the tests marked `serial` alone, after it: wall-clock bounds and real-time streaming that a busy
# machine would distort. Both passes always run; the target fails if either failed (5: it selected no test).
# --max-worker-restart=0: a test that crashes its worker (a SIGSEGV in native code) fails the pass at once. With
# restarts, pytest-xdist 3.8 under --dist loadfile hung with every worker idle after the crash, until CI's limit.
TEST_WORKERS ?= 2
test: setup
	@$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0 -m "not serial" $(PYTEST_ARGS); \
	a=$$?; \
	$(BIN)/python -m pytest -m serial $(PYTEST_ARGS); b=$$?; \
	for rc in $$a $$b; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done; \
	[ $$a -eq 0 ] || [ $$b -eq 0 ] || exit 5

# Consent lifecycle from the CLI: grant -> schedule -> air -> revoke, printing the time to off-air.
cycle: setup
	$(BIN)/python infra/consent_cycle.py

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check studio workers api tests bench

clean:
	rm -rf $(VENV) data bench/out .pytest_cache
