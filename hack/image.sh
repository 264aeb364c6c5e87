#!/usr/bin/env bash
# `make image`: the operator's container image, built without a Docker daemon.
#
# A release build of `rollguard`, made self-contained (the binary plus the few shared
# libraries it links, from this machine's Debian: the loader, libc, libm, libgcc_s), the CA
# bundle, and an /etc/passwd naming the non-root user 65532; no shell. Packed with umoci
# (built from its Go module by hack/build-umoci.sh, cached) into an OCI image layout:
#
#   target/image/oci          the layout, tag $VERSION (push: see README, "Installing")
#   target/image/rollguard-$VERSION.oci.tar   the same layout as one tarball
#   target/image/name         the image reference deploy/ and the chart use
#
# Prints the reference and the image's size.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VERSION=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
REPOSITORY=${IMAGE_REPOSITORY:-localhost:5000/rollguard}
SOURCE=${IMAGE_SOURCE:-https://github.com/rollguard/rollguard}
OUT="$ROOT/target/image"
say() { echo "==> $*" >&2; }

UMOCI=$(bash "$ROOT/hack/build-umoci.sh" | tail -n 1)
umoci() { "$UMOCI" "$@"; }

say "cargo build --release --bin rollguard"
cargo build --release --quiet --bin rollguard
BIN="$ROOT/target/release/rollguard"

say "staging the root filesystem"
rm -rf "$OUT"
ROOTFS="$OUT/rootfs"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
install -m 0755 "$BIN" "$ROOTFS/usr/local/bin/rollguard"
# The shared libraries the binary links and the loader its ELF header names, each at the
# path the loader looks for it (copied, not linked: the image has no /usr merge).
interpreter=$(readelf -l "$BIN" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[[ -n $interpreter ]] || { echo "error: no ELF interpreter in $BIN" >&2; exit 1; }
mkdir -p "$ROOTFS$(dirname "$interpreter")"
cp -L "$interpreter" "$ROOTFS$interpreter"
ldd "$BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
  dir="/lib/x86_64-linux-gnu"
  mkdir -p "$ROOTFS$dir"
  cp -L "$path" "$ROOTFS$dir/$soname"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/sbin/nologin\nrollguard:x:65532:65532:rollguard:/:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nrollguard:x:65532:\n' >"$ROOTFS/etc/group"

say "packing the OCI layout with umoci"
LAYOUT="$OUT/oci"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$VERSION"
umoci insert --rootless --image "$LAYOUT:$VERSION" \
  --history.created_by "hack/image.sh: rollguard $VERSION, self-contained" "$ROOTFS" /
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
umoci config --image "$LAYOUT:$VERSION" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/rollguard \
  --config.cmd run \
  --config.workingdir / \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label "org.opencontainers.image.title=rollguard" \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.source=$SOURCE" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "org.opencontainers.image.created=$created" \
  --manifest.annotation "org.opencontainers.image.version=$VERSION" \
  --manifest.annotation "org.opencontainers.image.source=$SOURCE" \
  --no-history
umoci gc --layout "$LAYOUT"
tar -C "$LAYOUT" -cf "$OUT/rollguard-$VERSION.oci.tar" .
echo "$REPOSITORY:$VERSION" >"$OUT/name"

layers=$(du -sb "$LAYOUT/blobs" | cut -f1)
rootfs=$(du -sb "$ROOTFS" | cut -f1)
say "image $REPOSITORY:$VERSION in $LAYOUT (tag $VERSION): blobs $((layers / 1024)) KiB compressed, root filesystem $((rootfs / 1024)) KiB"
echo "$REPOSITORY:$VERSION"
