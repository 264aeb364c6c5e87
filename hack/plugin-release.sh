#!/usr/bin/env bash
# `make plugin-release`: the release build of kubectl-rollguard as a krew archive, and the
# krew manifest (plugins/krew/rollguard.yaml) filled in for it:
#
#   target/plugin/kubectl-rollguard-v$VERSION-linux-amd64.tar.gz
#   target/plugin/rollguard.yaml    (uri: $PLUGIN_URI_BASE/v$VERSION/<archive>, its sha256)
#
# Prints the archive's path, then the manifest's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VERSION=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
URI_BASE=${PLUGIN_URI_BASE:-https://github.com/rollguard/rollguard/releases/download}
OUT="$ROOT/target/plugin"
ARCHIVE="kubectl-rollguard-v$VERSION-linux-amd64.tar.gz"

cargo build --release --quiet --bin kubectl-rollguard
rm -rf "$OUT"
mkdir -p "$OUT/stage"
install -m 0755 target/release/kubectl-rollguard "$OUT/stage/kubectl-rollguard"
tar -C "$OUT/stage" --owner=0 --group=0 --numeric-owner -czf "$OUT/$ARCHIVE" kubectl-rollguard
rm -rf "$OUT/stage"
SHA256=$(sha256sum "$OUT/$ARCHIVE" | cut -d' ' -f1)
VERSION=$VERSION URI="$URI_BASE/v$VERSION/$ARCHIVE" SHA256=$SHA256 python3 - plugins/krew/rollguard.yaml >"$OUT/rollguard.yaml" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
# Drop the template's leading comment; fill ${VERSION}, ${URI}, ${SHA256}.
text = re.sub(r"\A(#.*\n)+", "", text)
print(re.sub(r"\$\{(VERSION|URI|SHA256)\}", lambda m: os.environ[m.group(1)], text), end="")
PY
echo "$OUT/$ARCHIVE"
echo "$OUT/rollguard.yaml"
