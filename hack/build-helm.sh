#!/usr/bin/env bash
# helm (helm.sh/helm/v3), built from its Go module and cached, for the chart tests
# (`helm lint`, `helm template`). Prints the binary's path on its last line.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.22.0}
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" helm "$HELM_VERSION" helm.sh/helm/v3 ./cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
