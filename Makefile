# voicegw: `make run` and `make test` work on a fresh Debian machine on their own.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?=
# gcc and libc6-dev compile the media path (build_native.py); python3-dev is added below when the interpreter
# has no C headers of its own.
APT_PACKAGES := sip-tester espeak-ng sox baresip-core kamailio prometheus tcpdump gcc libc6-dev
PY_HEADERS := $(shell $(PYTHON) -c "import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))))" 2>/dev/null)
ifneq ($(PY_HEADERS),1)
APT_PACKAGES += python3-dev
endif
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps run test lint typecheck bench fuzz clean FORCE

install: system-deps $(VENV)/.installed $(VENV)/.native

# Debian packages the gateway and its tests use (SIPp as test peer, espeak-ng/sox for speech, Kamailio and
# promtool for the scale-out and metrics tests). Kamailio and Prometheus are test tools here: when we install
# them on a systemd host their services are disabled again (kamailio.service would take port 5060).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	  for svc in kamailio prometheus; do \
	    case " $$missing " in *" $$svc "*) \
	      if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now $$svc >/dev/null 2>&1 || true; fi;; \
	    esac; \
	  done; \
	fi

$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The per-packet media modules compiled with mypyc (build_native.py; about half the CPU per call). Rebuilt when
# one of them changes; until then the package runs their Python sources (gateway/native.py checks). NATIVE=0
# removes the compiled modules and runs the sources.
NATIVE ?= 1
ifeq ($(NATIVE),0)
export VOICEGW_NATIVE := 0
endif
NATIVE_SOURCES := $(wildcard gateway/rtp/*.py gateway/codecs/*.py gateway/transport/*.py) gateway/call_media.py
$(VENV)/.native: $(VENV)/.installed build_native.py $(NATIVE_SOURCES) $(if $(filter 0,$(NATIVE)),FORCE,)
	$(PY) build_native.py $(if $(filter 0,$(NATIVE)),--clean,)
	$(if $(filter 0,$(NATIVE)),rm -f $@,touch $@)

FORCE:

run: install
	$(PY) -m gateway serve $(if $(CONFIG),--config $(CONFIG),)

lint: install
	$(PY) -m ruff check gateway tests benchmarks build_native.py
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

typecheck: lint

# Unit tests (fake clocks, CPU-bound) run on every core; integration tests (real sockets, SIPp, baresip, timing
# on the wire) run one at a time so they never compete for the CPU with each other.
test: install lint
	$(PY) -m pytest -n auto tests/unit
	$(PY) -m pytest --durations=10 tests/integration

# Each benchmark writes its figures (and the command that produced them) under benchmarks/results/.
# The soak runs at half the echo knee (benchmarks/results/echo.md); `make bench SOAK_MINUTES=1` for a short one.
SOAK_MINUTES ?= 10
SOAK_CALLS ?= 250
# The load ramps repeat REPEAT times (fresh gateways) and report medians: single runs on a shared machine differ
# by more than most changes.
REPEAT ?= 3
bench: install
	$(PY) benchmarks/bench_sip_parser.py
	$(PY) benchmarks/bench_media_core.py
	$(PY) benchmarks/bench_jitter.py
	$(PY) benchmarks/bench_signalling.py --rates 100 200 250 300 350 400 --seconds 12 --repeat $(REPEAT)
	$(PY) benchmarks/bench_echo.py --calls 100 200 300 400 500 --seconds 40 --repeat $(REPEAT)
	$(PY) benchmarks/bench_conversation.py --calls 60 90 120 150 180 --seconds 25 --repeat $(REPEAT)
	$(PY) benchmarks/bench_soak.py --minutes $(SOAK_MINUTES) --calls $(SOAK_CALLS) --repeat $(REPEAT)
	$(PY) benchmarks/bench_soak.py --conversational --minutes $(SOAK_MINUTES) --calls 90 --repeat $(REPEAT)
	$(PY) -m pytest -m slow -p no:cacheprovider -o addopts="" tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

# Parser fuzzing under atheris (libFuzzer): at least 1,000,000 inputs across the SIP, SDP, RTP/RTCP, Digest and
# DTMF INFO parsers and TCP framing, seeded with the RFC 4475/5118 and captured messages. Figures go to
# benchmarks/results/fuzz.md; a crashing input is kept under fuzz/crashes/ and the target fails.
fuzz: install
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) -m fuzz.run --runs 2000000 --jobs 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build
	$(PYTHON) build_native.py --clean
