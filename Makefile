# Every target sets up its own virtual environment first; CI calls `make test` verbatim.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
# Two environments in one .venv: `make run` installs what the stack runs (RUN_STAMP); `make test`
# and the tool targets install the dev extra on top (STAMP), which marks the run set as present too.
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
RUN_EXTRAS := api,training,serving
PYTEST_ARGS ?=
# Test processes (pytest-xdist), each taking whole test files: the tests mostly wait on the
# servers and workers they start (a serial run kept 2 cores about 35% busy). 0: one process.
PYTEST_WORKERS ?= 3

.PHONY: run test test-containers lint lint-deploy format bench-serving bench-training bench-gateway bench-gateway-bombs bench-peers bench-promotion protos clean

define install_extras
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required (set PYTHON=...)"; exit 1; }
	@# A .venv left without pip (python3 -m venv failed at ensurepip: Debian's python3-venv missing)
	@# is made again rather than skipped for good.
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV) \
		|| { echo "could not create $(VENV) with pip (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(1)]'
endef

$(RUN_STAMP): pyproject.toml
	$(call install_extras,$(RUN_EXTRAS))
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(call install_extras,dev)
	touch $(STAMP) $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/fdl up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

# Builds the images (stand-in bases where none can be pulled) and runs the compose stack end to
# end with podman (docs/deploy.md); installs podman with apt-get when missing.
test-containers: $(STAMP)
	PYTHON="$(CURDIR)/$(BIN)/python" bash scripts/test-containers.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

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

# The gateway against a KServe transformer and a LitServe API (each in var/bench/<name>-venv, made
# on first use) and the model server called directly; BENCH_ARGS="--rounds 5" and so on pass through.
bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

protos: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/gen_protos.sh

clean:
	rm -rf $(VENV) var .pytest_cache

# The example images the README and docs classify (digit.png, digit.jpg, digits/*.png, cat.jpg),
# written into ./examples from the real MNIST and CIFAR-10 test data (scripts/example_images.py).
.PHONY: examples
examples: $(RUN_STAMP)
	$(BIN)/python scripts/example_images.py $(EXAMPLES_ARGS)
