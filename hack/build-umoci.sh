#!/usr/bin/env bash
# umoci (github.com/opencontainers/umoci), built from its Go module and cached, for
# `make image`. Prints the binary's path on its last line.
#
# Not Debian's package: its umoci 0.4.7 writes layers whose tar stream is cut short (the
# last file loses its tail; opencontainers/umoci#436), which the image test caught.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-go-tool.sh" umoci "${UMOCI_VERSION:-v0.6.0}" \
  github.com/opencontainers/umoci ./cmd/umoci
