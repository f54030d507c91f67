# imgclf: train and serve a torchvision ResNet through the SageMaker container contract.
#   make demo   set everything up, then sample data -> train -> deploy -> predict -> stop (process backend)
#   make test   set everything up, then lint and run the test suite

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= .imgclf
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) apt-get install -y --no-install-recommends

DEMO_DATA := $(WORKDIR)/data/digits
DEMO_IMAGE_CLASS := 3
DEMO_HYPERPARAMETERS := -H epochs=5 -H image_size=32 -H batch_size=32 -H learning_rate=0.02
LAUNCHER := $(BIN)/launcher --workdir $(WORKDIR)

.PHONY: install system-deps demo test lint format bench clean

install: $(VENV)/.installed

# Debian/Ubuntu packages: a Java runtime for multi-model-server, venv, and a compiler for sagemaker-training.
system-deps:
	@command -v java >/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) openjdk-17-jre-headless; }
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) python3.11-venv; }
	@command -v gcc >/dev/null && $(PYTHON) -c "import sysconfig, os, sys; \
		sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
		|| { $(SUDO) apt-get update && $(APT_INSTALL) gcc python3.11-dev; }

$(VENV)/.installed: container_src/requirements.txt launcher/requirements.txt requirements-dev.txt \
		pyproject.toml container_src/pyproject.toml
	$(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r container_src/requirements.txt -r launcher/requirements.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e container_src -e .
	touch $@

demo: install
	@set -e; \
	[ -d $(DEMO_DATA)/test ] || $(LAUNCHER) sample-data $(DEMO_DATA); \
	name=demo-$$(date +%Y%m%d-%H%M%S); \
	$(LAUNCHER) train --data $(DEMO_DATA) --job-name $$name $(DEMO_HYPERPARAMETERS); \
	$(LAUNCHER) deploy $$name --endpoint-name $$name; \
	trap '$(LAUNCHER) stop $$name' EXIT; \
	image=$$(ls $(DEMO_DATA)/test/$(DEMO_IMAGE_CLASS)/*.jpg | head -n 1); \
	echo "[demo] predicting held-out image $$image (true class $(DEMO_IMAGE_CLASS))"; \
	$(LAUNCHER) predict --endpoint $$name $$image

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/train_overhead.py

clean:
	rm -rf $(VENV) $(WORKDIR) .pytest_cache .ruff_cache
