# rollguard: the README's two commands are `make demo` and `make test`.
SHELL := /usr/bin/env bash

.PHONY: demo test bench bench-scale bench-peer chaos build image install-plugin plugin-release argocd-cm crds crd-check cluster-up cluster-down control-plane

## demo: start the local control plane, install the CRDs and examples, run the operator
demo:
	bash hack/demo.sh

## test: fmt, clippy, CRD drift check and all tests against the local control plane
test:
	bash hack/test.sh

## chaos: the fault matrix (also part of make test), one test per row, printed as a table
chaos:
	bash hack/chaos.sh

## bench: benchmarks against the local control plane; each prints its figures
bench:
	bash hack/bench.sh

## bench-scale: the fleet benchmark (N = 250, 500, 1000, 2000 ModelDeployments; set
## ROLLGUARD_FLEET_SIZES for others): one row of figures per N (not part of make test)
bench-scale:
	bash hack/bench-fleet.sh

## bench-peer: the same fleet work done by rollguard and by Argo Rollouts v1.10.2 (built from
## its Go module, cached), printed side by side (not part of make test)
bench-peer:
	bash hack/bench-fleet.sh --peer

build:
	cargo build

## image: the operator's OCI image (release build, self-contained, non-root, no shell) in
## target/image/oci, built with umoci without a Docker daemon; prints its name and size
image:
	bash hack/image.sh

## install-plugin: the release build of `kubectl rollguard` in $(PREFIX)/bin (default
## ~/.local/bin; kubectl finds it there when that directory is on PATH)
PREFIX ?= $(HOME)/.local
install-plugin:
	cargo build --release --quiet --bin kubectl-rollguard
	install -D -m 0755 target/release/kubectl-rollguard $(PREFIX)/bin/kubectl-rollguard
	@echo "installed $(PREFIX)/bin/kubectl-rollguard: try 'kubectl rollguard --help'"

## plugin-release: the krew archive of kubectl-rollguard and its manifest, in target/plugin
plugin-release:
	bash hack/plugin-release.sh

## argocd-cm: deploy/argocd/argocd-cm.yaml from the Argo CD health checks
argocd-cm:
	bash hack/argocd-cm.sh

## crds: regenerate crds/ (and the chart's copy) from the Rust types
crds:
	cargo run --quiet -- crd > crds/rollguard.yaml
	cp crds/rollguard.yaml charts/rollguard/crds/rollguard.yaml

## crd-check: fail when crds/ differs from the Rust types
crd-check:
	cargo run --quiet -- crd | diff -u crds/rollguard.yaml -

## control-plane: build (or reuse) the control-plane binaries in ~/.cache/rollguard
control-plane:
	bash hack/build-control-plane.sh

## cluster-up: start the local control plane (idempotent); kubeconfig in .local-cluster/kubeconfig
cluster-up:
	bash hack/cluster-up.sh

## cluster-down: stop the local control plane and remove its state
cluster-down:
	bash hack/cluster-down.sh
