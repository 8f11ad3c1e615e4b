# infergate developer entry points. Everything installs into $(VENV) from the hashed lock files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REGISTRY ?= ./demo-registry
HOST ?= 127.0.0.1
PORT ?= 8001
METRICS_PORT ?= 8002
MONITOR_PORT ?= 8090

.PHONY: install install-dev serve test pytest lint fmt protos protos-check lock bench clean

$(VENV)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.lock pyproject.toml $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

$(REGISTRY)/.built: | $(VENV)/.runtime
	$(VENV)/bin/infergate-registry demo $(REGISTRY)
	touch $@

# The drift monitor (history in $(REGISTRY)/../monitor.db) and the gateway, sampling to it, on one registry.
# Both run as jobs of one shell whose trap forwards INT/TERM (Ctrl-C) to both and waits for them to stop;
# when either exits on its own, the other is stopped too.
serve: $(VENV)/.dev $(REGISTRY)/.built
	@$(PY) -m gateway.quickstart --target $(HOST):$(PORT)
	@stop() { trap '' INT TERM; kill -s $$1 $$gateway $$monitor 2>/dev/null; wait $$gateway $$monitor; }; \
	gateway=; \
	$(VENV)/bin/infergate-monitor --registry $(REGISTRY) --host $(HOST) --port $(MONITOR_PORT) \
		--db $(REGISTRY)/../monitor.db & monitor=$$!; \
	trap 'stop INT; exit 130' INT; trap 'stop TERM; exit 143' TERM; \
	for _ in $$(seq 300); do \
		{ : >/dev/tcp/$(HOST)/$(MONITOR_PORT); } 2>/dev/null && break; \
		kill -0 $$monitor 2>/dev/null || break; sleep 0.1; \
	done; \
	$(VENV)/bin/infergate-gateway --registry $(REGISTRY) --host $(HOST) --port $(PORT) \
		--metrics-port $(METRICS_PORT) --monitor-url ws://$(HOST):$(MONITOR_PORT)/v1/samples/stream & gateway=$$!; \
	wait -n; status=$$?; stop TERM; exit $$status

test: install-dev lint protos-check prometheus native-client pytest

pytest: install-dev
	$(PY) -m pytest -q

# Debian's prometheus package (promtool and the server) for the deploy tests (tests/*/test_deploy_*.py).
# Installs it only when missing and run as root, and leaves no service running; otherwise those tests skip
# and say why.
.PHONY: prometheus
prometheus:
	@bash scripts/ensure-prometheus.sh

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Regenerates protos/*_pb2.py, *_pb2_grpc.py and *.pyi from protos/*.proto.
protos: install-dev
	$(PY) -m protos.generate

# Fails when the committed generated code differs from what `make protos` would write.
protos-check: install-dev
	$(PY) -m protos.generate --check

# Re-resolves the hashed lock files from pyproject.toml's ranges.
lock: install-dev
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--no-header -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra dev --extra load --universal \
		--python-version 3.11 --generate-hashes --no-header -c requirements.lock -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmark suite (bench/, docs/loadtests.md "The benchmark suite"; not installed, not part of `make test`).
# `make bench` runs every section (load, hotpath, batching, swap, rollout, sampling, workers, auth, drift, feedback) on fresh servers
# on fresh registries under bench-out/ (git-ignored), saves each section's JSON under bench-out/results/,
# rewrites each section's block of BENCHMARKS.md, copies the plots it links to docs/bench/, and rewrites the
# summary table of goals met or missed at the top. A subset: `make bench SECTIONS="batching swap"`; the gpu and
# drift-power sections run only when named. BENCH_ARGS passes options through (`python -m bench --help`), e.g.
# `BENCH_ARGS="--duration 1 --warmup 0"` for a short try, `--render-only` to re-render saved results.
# BENCH_BASELINE_REV: the load section also measures a gateway built from that git revision (default: the
# foundation's, unbatched) for before/after figures; `make bench BENCH_BASELINE_REV=` skips it.
SECTIONS ?=
BENCH_BASELINE_REV ?= bce4003
BENCH_ARGS ?=
.PHONY: bench bench-scenario bench-list
bench: install-dev
	$(PY) -m bench $(SECTIONS) --out BENCHMARKS.md \
		$(if $(BENCH_BASELINE_REV),--baseline-rev $(BENCH_BASELINE_REV)) $(BENCH_ARGS)

# One load scenario alone (results only; BENCHMARKS.md is untouched): `make bench-scenario SCENARIO=gateway-open-tiny`.
bench-scenario: install-dev
	$(PY) -m bench load --scenario $(SCENARIO) \
		$(if $(BENCH_BASELINE_REV),--baseline-rev $(BENCH_BASELINE_REV)) $(BENCH_ARGS)

# bench-rollout: issue 16's safe rollout (shadow's p99 cost over 10 rounds, time to detect each bad candidate; about 8 minutes).
.PHONY: bench-rollout
bench-rollout:
	$(MAKE) bench SECTIONS=rollout

bench-list: install-dev
	$(PY) -m bench --list
	$(PY) -m bench load --list-scenarios

# One section each, as before the suite had one command (about 1-4 minutes each on 2 cores; drift about 2).
# bench-hotpath: issue 13's goals (a), (b), (d), (e), (f) in one run (about 20 minutes on 2 cores: 17 at f217dde with 3 rounds of (f));
# bench-auth: issue 15's cost of auth and TLS.
# bench-feedback: issue 17's ground-truth ingest (labels/s over HTTP, bytes per stored prediction; about 1 minute).
.PHONY: bench-batching bench-swap bench-sampling bench-workers bench-drift bench-drift-power bench-hotpath bench-auth bench-feedback
bench-batching bench-swap bench-sampling bench-workers bench-drift bench-drift-power bench-hotpath bench-auth bench-feedback:
	$(MAKE) bench SECTIONS=$(@:bench-%=%)

# infergate-load's native engine (loadtests/native/: load.cc, h2.cc, hpack.cc; `infergate-load --native-client
# build/infergate-load-native`): a compiled one-thread HTTP/2 gRPC client for offered rates one Python client
# core cannot sustain. Needs only g++. Used by the hotpath section's overload steps when it is built;
# `make test` builds it so tests/integration/test_load_native*.py run.
NATIVE_CLIENT ?= build/infergate-load-native
NATIVE_SOURCES := loadtests/native/load.cc loadtests/native/h2.cc loadtests/native/hpack.cc
.PHONY: native-client
native-client: $(NATIVE_CLIENT)
$(NATIVE_CLIENT): $(NATIVE_SOURCES) loadtests/native/h2.h loadtests/native/hpack.h
	mkdir -p $(dir $@)
	g++ -O2 -std=c++17 -Wall -Wextra $(NATIVE_SOURCES) -o $@

# Where a request's time goes (bench/profiling.py, docs/loadtests.md "Profiling the gateway"): starts a
# gateway on a fresh bench registry under bench-out/profile/, drives it with a named closed-loop load
# (SCENARIO: tiny-c1, tiny-c16, tiny-c64, mlp-c1, mlp-c16, mlp-c64 (default), mlp-rows32), samples it with
# py-spy and prints a per-stage table (bench/stages.py sorts stacks into stages). Raw stacks and JSON stay
# in bench-out/profile/.
# PROFILE_ARGS: e.g. `--native`, `--defaults`, `--rev HEAD`, `--out BENCHMARKS.md --label after`
# (that label's table of the run in BENCHMARKS.md's profile section). About 20 s.
PROFILE_ARGS ?=
.PHONY: profile
profile: install-dev
	$(PY) -m bench.profiling --scenario $(or $(SCENARIO),mlp-c64) $(PROFILE_ARGS)

# infergate beside PyTriton 0.7.0 and MLServer 1.7.1 (bench/peers/, docs/loadtests.md "Peers"): builds one venv
# per peer under $(PEER_VENVS) (git-ignored) from the hashed lock files bench/peers/*.lock (uv, Python 3.11;
# rebuilt only when a lock changes), then runs the peers section: one server at a time (infergate as the
# peers are, infergate with its defaults, PyTriton, MLServer with default and with 0 parallel_workers), the
# same infergate-load scenarios on the same ONNX models, and rewrites the peers block of BENCHMARKS.md (and
# the goals summary) with the plots in docs/bench/peers/. About 10 minutes on 2 cores, plus the first build
# of the venvs (about 0.5 GB on disk). Not part of `make test`. Shorter or fewer:
# `make bench-peers BENCH_ARGS="--duration 1 --peers-servers infergate,pytriton"` (`python -m bench --help`).
# Regenerate a lock: .venv/bin/uv pip compile bench/peers/NAME.in --python-version 3.11
#   --python-platform x86_64-manylinux_2_35 --generate-hashes --no-header -o bench/peers/NAME.lock
PEER_VENVS ?= bench-out/peer-venvs
.PHONY: bench-peers
$(PEER_VENVS)/venv-%/.installed: bench/peers/%.lock $(VENV)/.dev
	rm -rf $(PEER_VENVS)/venv-$*
	$(VENV)/bin/uv venv -q --python $(PY) $(PEER_VENVS)/venv-$*
	$(VENV)/bin/uv pip sync -q --require-hashes --python $(PEER_VENVS)/venv-$*/bin/python $<
	touch $@

bench-peers: install-dev $(PEER_VENVS)/venv-pytriton/.installed $(PEER_VENVS)/venv-mlserver/.installed
	$(PY) -m bench peers --out BENCHMARKS.md --peers-venvs $(PEER_VENVS) $(BENCH_ARGS)
