# Every target delegates to a script under hack/ so CI and newcomers run the same thing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help demo test unit lint checkov fuzz cluster-binaries cluster-up cluster-down docker-up docker-down images crds bench

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## bring up the local cluster + operator and serve the sample ModelInstances
	bash hack/demo.sh

test: ## everything: lint, unit, Kubernetes and Docker integration tests
	bash hack/test.sh

unit: ## lint + unit tests only (no cluster, no Docker)
	bash hack/test.sh unit

lint: ## ruff + mypy
	bash hack/test.sh lint

checkov: ## scan the Helm chart and rendered samples with checkov (own venv); skips in hack/checkov-skips.yaml
	bash hack/checkov.sh

fuzz: ## long property-test profile: 10,000 mutated documents per test (not run by CI; takes a while)
	bash hack/venv.sh >/dev/null && XW_HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest -q --timeout=0 \
	  -p no:cacheprovider --hypothesis-show-statistics tests/unit/test_fuzz_inputs.py

cluster-binaries: ## build (or reuse) etcd, kube-*, kwok, kubectl, helm into the cache
	bash hack/cluster.sh build

cluster-up: ## start the local loopback cluster; prints export KUBECONFIG=...
	bash hack/cluster.sh up

cluster-down: ## stop the demo's operator (if running) and every process cluster-up started
	bash hack/demo.sh stop

docker-up: ## install (if needed) and start a Docker engine for the Docker-mode tests
	bash hack/docker.sh up

docker-down: ## stop the Docker engine docker-up started
	bash hack/docker.sh down

images: ## build the local stand-in engine images and the Debian base image (cached)
	bash hack/test-images.sh && bash hack/test-images.sh base

crds: ## regenerate crds/ from the pydantic API model and copy it (and devices.yaml) into the chart
	bash hack/venv.sh >/dev/null && .venv/bin/xw crds -o crds/modelinstances.xw.dev.yaml
	bash hack/sync-chart-files.sh

bench: ## run the benchmarks
	bash hack/venv.sh >/dev/null && .venv/bin/python bench/run.py
