# naiad — the two set-up commands of the README, and a few for development.
# `make serve`: install and run the server on the bundled example model repository.
# `make test`:  install and run the whole test suite (what CI runs).

PYTHON ?= python3
VENV   ?= .venv
PIP    := $(VENV)/bin/pip
PY     := $(VENV)/bin/python
# System libraries: jemalloc (allocator = "jemalloc"), libb64 (perf_analyzer), and the
# native front ends' (pkg-config, grpc++, protobuf, libevent; node-llhttp: llhttp's C sources for the
# HTTP one; rapidjson-dev: its native lanes' JSON; optional: naiad builds without them).
APT_PACKAGES := libjemalloc2 libb64-0d pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler-grpc node-llhttp \
	rapidjson-dev
# Only the tests use these: a real browser for the status page, a real Prometheus.
APT_TEST_PACKAGES := chromium chromium-driver prometheus

.PHONY: serve test conformance fuzz soak install install-test system-deps test-system-deps debug clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null) \
		|| echo "note: could not install $(APT_PACKAGES); jemalloc tests will be skipped"; \
	fi

test-system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST_PACKAGES) >/dev/null) \
		|| echo "note: could not install $(APT_TEST_PACKAGES); the browser and Prometheus tests will be skipped"; \
	fi

install: $(VENV)/bin/activate system-deps
	$(PIP) install -q -e .

install-test: $(VENV)/bin/activate system-deps test-system-deps
	$(PIP) install -q -e ".[test]"

serve: install
	$(VENV)/bin/naiad serve --model-repository examples/models

test: install-test
	$(PY) -m pytest -q

# Triton's QA selection against naiad (skipped when ../shared/triton-qa is absent); fails when a
# test listed in .ci/triton-qa-expected-passes.txt no longer passes.
conformance:
	@[ -x $(VENV)/bin/naiad ] || $(MAKE) install
	$(PY) .ci/triton_qa_guard.py

# The fuzz tests' long run (tests/**/test_fuzz_*.py): FUZZ_INPUTS inputs per target, each
# hypothesis-built input sent with FUZZ_VARIANTS byte-level mutations of it; inputs per target
# in bench/results/fuzz-<time>.csv. `make test` runs the same targets for a few hundred inputs.
FUZZ_INPUTS   ?= 100000
FUZZ_VARIANTS ?= 127
fuzz:
	@[ -x $(VENV)/bin/naiad ] || $(MAKE) install-test
	@mkdir -p bench/results
	@report=bench/results/fuzz-$$(date -u +%Y%m%d-%H%M).csv; echo "target,inputs,failures" > $$report; \
	NAIAD_FUZZ_INPUTS=$(FUZZ_INPUTS) NAIAD_FUZZ_VARIANTS=$(FUZZ_VARIANTS) NAIAD_FUZZ_REPORT=$$report \
		$(PY) -m pytest -q -s -p no:cacheprovider --timeout=0 $$(find tests -name 'test_fuzz_*.py' | sort); \
	status=$$?; echo "fuzz report: $$report"; cat $$report; exit $$status

# bench/soak.py: SOAK_MINUTES at c=8 over HTTP and gRPC per allocator (system, then jemalloc
# preloaded), RSS every 10 s, into bench/results/soak-<time>.csv and .md. Only the soak needs
# jemalloc to preload and perf_analyzer's libb64 (make serve has libjemalloc2 for allocator=jemalloc).
APT_SOAK_PACKAGES := libjemalloc2 libb64-0d
SOAK_MINUTES ?= 10
soak:
	@[ -x $(VENV)/bin/naiad ] && $(PY) -c "import tritonclient.grpc" 2>/dev/null || $(MAKE) install-test
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_SOAK_PACKAGES) >/dev/null) \
		|| echo "note: could not install $(APT_SOAK_PACKAGES); the jemalloc soak needs libjemalloc2"; \
	fi
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

# A debug build of ext/ (-O0 -g, bounds checks on) with Cython's annotated HTML.
debug: $(VENV)/bin/activate
	NAIAD_DEBUG_BUILD=1 NAIAD_CYTHON_ANNOTATE=1 $(PIP) install -q --no-build-isolation -e .

clean:
	rm -rf build *.egg-info ext/*.so ext/*.c ext/*.html protos/*_pb2*.py protos/*_pb2*.pyi
