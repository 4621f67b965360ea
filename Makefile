# Every target sets up its own virtual environment first; CI calls `make test` verbatim.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-containers lint lint-deploy format bench-serving bench-training bench-gateway bench-gateway-bombs bench-peers bench-promotion protos clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fdl up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Builds the images (stand-in bases where none can be pulled) and runs the compose stack end to
# end with podman (docs/deploy.md); installs podman with apt-get when missing.
test-containers: $(STAMP)
	PYTHON="$(CURDIR)/$(BIN)/python" bash scripts/test-containers.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-deploy: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/lint-deploy.sh

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Benchmarks print measured numbers; they read ../shared/data unless FDL_DATA_DIR is set.
bench-serving: $(STAMP)
	$(BIN)/python bench/serving_bench.py
	$(BIN)/python bench/grpc_transport.py

bench-training: $(STAMP)
	cd bench && ../$(BIN)/python training_throughput.py && ../$(BIN)/python training_accuracy.py mnist_logreg mnist_mlp mnist_cnn

bench-gateway-bombs: $(STAMP)
	$(BIN)/python bench/gateway_bombs.py

bench-promotion: $(STAMP)
	$(BIN)/python bench/promotion_race.py

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway_preprocess.py
	$(BIN)/python bench/gateway_latency.py
	$(BIN)/python bench/gateway_digits.py

# The gateway against a KServe transformer (in var/bench/kserve-venv, made on first use) and the
# model server called directly; BENCH_ARGS="--rounds 5" and so on pass through.
bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

protos: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/gen_protos.sh

clean:
	rm -rf $(VENV) var .pytest_cache
