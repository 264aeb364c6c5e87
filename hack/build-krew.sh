#!/usr/bin/env bash
# krew (sigs.k8s.io/krew) and its validate-krew-manifest, built from their Go module and
# cached, for the plugin test: the manifest is valid and krew installs the archive.
# Prints krew's path, then validate-krew-manifest's.
set -euo pipefail
KREW_VERSION=${KREW_VERSION:-v0.4.3}
here=$(dirname "${BASH_SOURCE[0]}")
bash "$here/build-go-tool.sh" krew "$KREW_VERSION" sigs.k8s.io/krew ./cmd/krew \
  "-X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION" | tail -n 1
bash "$here/build-go-tool.sh" validate-krew-manifest "$KREW_VERSION" sigs.k8s.io/krew ./cmd/validate-krew-manifest | tail -n 1
