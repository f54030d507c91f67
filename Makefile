# imgclf: train and serve a torchvision ResNet through the SageMaker container contract.
#   make demo   set everything up, then two cycles of the retrain loop on the process backend: a first model on half
#               the sample data, deployed; then all of it: tune -> challenge -> promote -> predict -> stop
#   make ui     MLflow's UI on what the demo (and every launcher command) tracked
#   make test   set everything up (the Docker engine and the image too), then lint and run the whole suite
#   make test-fast  lint and the quick tests (no Docker, no model server, no real training run)
#   make build  build the train+serve image; make push pushes it to ECR, or to REGISTRY=host:port

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# bench-gpu's python: the GPU machine's own, with torch
GPU_PYTHON ?= python3
WORKDIR ?= .imgclf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get install -y --no-install-recommends

DEMO_DATA := $(WORKDIR)/data/digits
MLFLOW_UI := 'mlflow>=3.17,<4'

DEMO_CONFIG := examples/demo.yaml
DEMO_FIRST_CONFIG := examples/demo-first.yaml
LAUNCHER := $(BIN)/launcher --workdir $(WORKDIR)

# The image. Without registry access, BASE_IMAGE=$(LOCAL_BASE) (made by `make base-image` from Debian's packages).
IMAGE ?= imgclf
TAG ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE ?= imgclf-base:bookworm
WEIGHTS ?=
REGISTRY ?=
REGION ?=
# Without the buildx plugin, BuildKit is unavailable: use the classic builder (the Dockerfile suits both).
DOCKER_BUILD := $(if $(shell docker buildx version 2>/dev/null),docker build,DOCKER_BUILDKIT=0 docker build)

.PHONY: install system-deps browser demo ui test test-fast test-shuffled test-docker lint format bench bench-gpu torchserve-venv clean wheelhouse base-image build push docker-engine

install: $(VENV)/.installed

# Debian/Ubuntu packages: a Java runtime for multi-model-server, venv, and a compiler for sagemaker-training.
system-deps:
	@command -v java >/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) openjdk-17-jre-headless; }
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) python3.11-venv; }
	@command -v gcc >/dev/null && $(PYTHON) -c "import sysconfig, os, sys; \
		sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
		|| { $(SUDO) apt-get update && $(APT_INSTALL) gcc python3.11-dev; }

# Headless Chromium: a test opens the training report in it.
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) chromium; }

$(VENV)/.installed: container_src/requirements.txt launcher/requirements.txt requirements-dev.txt \
		pyproject.toml container_src/pyproject.toml container_src/contract/pyproject.toml
	$(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r container_src/requirements.txt -r launcher/requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e container_src/contract -e container_src -e .
	touch $@

# Two cycles of the retrain loop: a first model on half of the data, deployed; then all of it (the "new data"):
# tune, challenge the deployed model with the best trial's on the same test split, promote or keep it, predict, stop.
demo: install
	@[ -d $(DEMO_DATA)/test ] || $(LAUNCHER) sample-data $(DEMO_DATA)
	@[ -d $(DEMO_DATA)-first/test ] || $(LAUNCHER) sample-data $(DEMO_DATA)-first --fraction 0.5
	@run=demo-$$(date +%Y%m%d-%H%M%S); set -e; \
	trap '$(LAUNCHER) stop $$run-1-ep >/dev/null 2>&1 || true' EXIT; \
	echo "== cycle 1: a first model on half of the data, deployed as $$run-1-ep"; \
	$(LAUNCHER) run --config $(DEMO_FIRST_CONFIG) --data $(DEMO_DATA)-first --name $$run-1; \
	echo "== cycle 2: new data arrives; tune on all of it, challenge the model $$run-1-ep serves"; \
	$(LAUNCHER) run --config $(DEMO_CONFIG) --data $(DEMO_DATA) --name $$run-2 --endpoint $$run-1-ep --stop-endpoint

# MLflow's UI on the work folder's tracking store (the full mlflow package; the launcher needs only mlflow-skinny).
ui: install
	@$(BIN)/python -c "import launcher.tracking_ui as u, sys; sys.exit(not u.has_ui())" || $(BIN)/pip install -q $(MLFLOW_UI)
	$(LAUNCHER) ui

# The tests without Docker run in TEST_WORKERS processes (pytest-xdist, one test file per worker at a time); the
# Docker tests after them, one at a time (they share the engine). Both run even if the first part fails.
TEST_WORKERS ?= 2
PYTEST_NO_DOCKER := $(BIN)/python -m pytest -m "not docker" -n $(TEST_WORKERS) --dist loadfile
PYTEST_DOCKER := IMGCLF_TEST_IMAGE=$(IMAGE):test $(BIN)/python -m pytest -m docker

test: install lint browser docker-engine
	$(MAKE) build BASE_IMAGE=$(TEST_BASE) TAG=test
	@status=0; $(PYTEST_NO_DOCKER) || status=1; $(PYTEST_DOCKER) || status=1; exit $$status

# Only the Docker tests (the image must be built: make build TAG=test).
test-docker: install docker-engine
	$(PYTEST_DOCKER)

# The quick loop: no Docker, no model server, no real training run (tests marked `slow`); a few minutes on 2 cores.
test-fast: install lint
	$(BIN)/python -m pytest -m "not docker and not slow" -n $(TEST_WORKERS) --dist loadfile

# The tests without Docker in a random order (pytest-random-order; its seed is printed: SEED=N repeats an order).
test-shuffled: install lint browser
	$(PYTEST_NO_DOCKER) -p random_order --random-order-bucket=module $(if $(SEED),--random-order-seed=$(SEED))

# The tests build from the public base where a registry answers, else from the bootstrapped one.
TEST_BASE = $(shell docker image inspect $(LOCAL_BASE) >/dev/null 2>&1 && echo $(LOCAL_BASE) \
	|| { timeout 20 docker pull -q $(BASE_IMAGE) >/dev/null 2>&1 && echo $(BASE_IMAGE); } \
	|| { docker/bootstrap-base.sh $(LOCAL_BASE) >&2 && echo $(LOCAL_BASE); })

docker-engine:
	@docker/ensure-engine.sh >/dev/null

wheelhouse: build/wheelhouse/.complete

build/wheelhouse/.complete: container_src/requirements.txt $(VENV)/.installed
	$(BIN)/pip wheel -q --wheel-dir build/wheelhouse -r container_src/requirements.txt
	touch $@

base-image:
	docker/bootstrap-base.sh $(LOCAL_BASE)

build: wheelhouse
	$(DOCKER_BUILD) -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg WEIGHTS="$(WEIGHTS)" \
		-t $(IMAGE):$(TAG) -t $(IMAGE):latest .
	@docker image inspect --format '$(IMAGE):$(TAG) {{.Size}} bytes' $(IMAGE):$(TAG)

push: install
	$(BIN)/python docker/push.py $(IMAGE):$(TAG) $(if $(REGISTRY),--registry $(REGISTRY)) $(if $(REGION),--region $(REGION))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	-$(MAKE) torchserve-venv
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/transform.py
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/diagnostics_overhead.py
	$(BIN)/python bench/input_pipeline.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/tuning_early_stopping.py
	$(BIN)/python bench/tracking_overhead.py
	$(BIN)/python bench/dataset_store.py
	$(BIN)/python bench/router.py

# TorchServe 0.12 for bench/serve.py's comparison, in a virtualenv of its own (its model-archiver package clashes
# with multi-model-server's; the benchmark writes the model's manifest itself and needs neither). It borrows torch
# and torchvision from $(VENV) through a .pth file, which Python puts after the virtualenv's own packages.
TORCHSERVE_VENV := build/torchserve-venv
torchserve-venv: $(TORCHSERVE_VENV)/.installed
$(TORCHSERVE_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(TORCHSERVE_VENV)
	$(TORCHSERVE_VENV)/bin/pip install -q torchserve==0.12.0
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(TORCHSERVE_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/project-venv.pth"
	touch $@

# On a GPU machine: ResNet-50 training images/s, ours against a bare loop, synthetic and JPEG data.
# The GPU checks, from source with the machine's own python3 (torch, torchvision, Pillow, psutil, nvidia-ml-py;
# no smdebug, toolkits or Java needed): ResNet-50 training from JPEGs against a bare loop, and the serving hooks.
bench-gpu:
	PYTHONPATH=container_src:bench $(GPU_PYTHON) bench/gpu_train.py

clean:
	rm -rf $(VENV) $(WORKDIR) build .pytest_cache .ruff_cache
