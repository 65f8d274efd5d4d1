# One-command set-up, run and test. `make run` and `make test` create the venv on first use and
# skip the install when it is current (the stamp is newer than setup.py and constraints.txt).
SHELL := /bin/bash
VENV  := .venv
STAMP := $(VENV)/.installed
ARGS  ?=
# Where every output goes (pipeline root, ML Metadata, pushed models, logs, reports).
OUT   ?= $(or $(TAXI_PIPELINE_HOME),outputs)

# Python 3.10: from PATH when it really runs (a pyenv shim may exist but refuse), else under pyenv.
PYTHON ?= $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*/bin/python 2>/dev/null | sort -V | tail -n 1); do \
            $$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done)

# The Kubeflow image (podman or docker, whichever runs); BASE_IMAGE: any python:3.10-slim equivalent.
IMAGE      ?= taxi-pipeline:dev
BASE_IMAGE ?= python:3.10-slim
LOCAL_BASE ?= localhost/taxi-python:3.10-slim

.PHONY: setup run test bench compile image base-image container-tools grpc-frontend grpc-frontend-tools report clean

# The compiled gRPC front end of `serve` (serving/model_servers/grpc_frontend): built by `make setup`
# when Debian's gRPC C++ library is installed (`make grpc-frontend-tools`, root); without it `serve`
# runs its grpc.aio front end and says so.
FRONTEND_DIR := serving/model_servers/grpc_frontend
FRONTEND     := $(FRONTEND_DIR)/build/grpc_frontend

setup: $(STAMP)
	@if pkg-config --exists grpc++ 2>/dev/null && command -v g++ >/dev/null; then $(MAKE) -s grpc-frontend || \
	   echo "WARNING: the compiled gRPC front end did not build (above): serve will use its grpc.aio front end" >&2; \
	 else echo "note: gRPC C++ not installed ('make grpc-frontend-tools' as root): serve will use its grpc.aio front end"; fi

grpc-frontend: $(FRONTEND)

$(FRONTEND): $(FRONTEND_DIR)/grpc_frontend.cc
	@mkdir -p $(@D)
	g++ -O2 -std=c++17 -Wall -o $@.tmp $< $$(pkg-config --cflags --libs grpc++ grpc) -lpthread && mv $@.tmp $@

# Debian packages the compiled gRPC front end builds with (root, apt): g++ and gRPC C++.
grpc-frontend-tools:
	@command -v g++ >/dev/null && pkg-config --exists grpc++ 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ pkg-config libgrpc++-dev >/dev/null; }

$(STAMP): setup.py constraints.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.10 not found on PATH or under pyenv; install it (e.g. 'pyenv install 3.10') and retry" >&2; exit 1; }
	@echo "setting up $(VENV) with $(PYTHON) (first time: several minutes)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.45.1"
	@$(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[test]"
	@$(VENV)/bin/python -m pip check
	@touch $(STAMP)

# Run the pipeline, then serve the pushed model and query a few eval rows over gRPC.
run: setup
	$(VENV)/bin/taxi-pipeline run --home $(OUT) $(ARGS)
	TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore::FutureWarning $(VENV)/bin/python -m pipeline.demo --home $(OUT)

test: setup
	$(VENV)/bin/python -m pytest $(ARGS)

bench: setup
	$(VENV)/bin/python -m bench $(ARGS)

compile: setup
	$(VENV)/bin/taxi-pipeline compile --home $(OUT) $(ARGS)

# Builds kubeflow/Dockerfile as $(IMAGE). Where nothing can be pulled: `make base-image`, then
# `make image BASE_IMAGE=localhost/taxi-python:3.10-slim`.
image:
	kubeflow/image/build.sh "$(IMAGE)" "$(BASE_IMAGE)"

# A local python:3.10-slim equivalent (debootstrap + this machine's Python 3.10), tagged $(LOCAL_BASE).
base-image:
	kubeflow/image/make-base.sh "$(LOCAL_BASE)"

# Debian packages the image tests need (root, apt): podman with runc, debootstrap for the base.
container-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; }

report: setup
	$(VENV)/bin/taxi-pipeline report --home $(OUT) $(ARGS)

clean:
	rm -rf $(OUT) .pytest_cache
