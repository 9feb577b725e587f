#!/usr/bin/env bash
# Install what the chaos tests (test/chaos-netns.test.ts, harness test/helpers/netns.ts) need:
#   - iproute2's `ip` (network namespaces, veth pairs, the lab bridge)      Debian package iproute2
#   - `nft` (cuts links between hosts at the bridge: nftables, bridge family) Debian package nftables
#   - toxiproxy-server (Shopify's fault-injecting TCP proxy: latency, bandwidth, stalls), built from the
#     Go module github.com/Shopify/toxiproxy/v2 into ${BLOCKMESH_CACHE:-~/.cache/blockmesh}/bin/toxiproxy-server
#
# Usage: scripts/install-chaos-tools.sh
# Idempotent: what is present (toxiproxy-server: at the pinned version) is left alone. Prints one line per
# tool. Exits 1 when something could not be had (CI goes on: those tests then skip and say why).
set -uo pipefail

TOXIPROXY_VERSION="2.12.0" # keep in step with TOXIPROXY_VERSION in test/helpers/netns.ts
BIN_DIR="${BLOCKMESH_CACHE:-$HOME/.cache/blockmesh}/bin"
TOXIPROXY="$BIN_DIR/toxiproxy-server"
failed=0

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
apt_updated=0
apt_install() { # apt_install PACKAGE: installs a Debian package when apt-get is there
  if ! command -v apt-get >/dev/null 2>&1; then return 1; fi
  if [ "$apt_updated" = "0" ]; then $SUDO apt-get update -qq >/dev/null || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

ensure_command() { # ensure_command COMMAND PACKAGE
  if command -v "$1" >/dev/null 2>&1; then
    echo "install-chaos-tools: $1 present ($(command -v "$1"))"
  elif apt_install "$2" && command -v "$1" >/dev/null 2>&1; then
    echo "install-chaos-tools: $1 installed (Debian package $2)"
  else
    echo "install-chaos-tools: $1 missing and the Debian package $2 could not be installed" >&2
    failed=1
  fi
}

ensure_command ip iproute2
ensure_command nft nftables

if [ -x "$TOXIPROXY" ] && [ "$("$TOXIPROXY" -version 2>/dev/null)" = "toxiproxy-server version $TOXIPROXY_VERSION" ]; then
  echo "install-chaos-tools: toxiproxy-server $TOXIPROXY_VERSION present ($TOXIPROXY)"
else
  GO="$(command -v go || true)"
  if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
  if [ -z "$GO" ]; then
    echo "install-chaos-tools: no go toolchain; toxiproxy-server not built (the Toxiproxy tests will skip)" >&2
    failed=1
  else
    mkdir -p "$BIN_DIR"
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/blockmesh-toxiproxy.XXXXXX")"
    # go install names the binary after its package directory (cmd/server); the version is stamped in
    if GOBIN="$TMP" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$GO" install -trimpath \
        -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION" \
        "github.com/Shopify/toxiproxy/v2/cmd/server@v$TOXIPROXY_VERSION" && [ -x "$TMP/server" ]; then
      mv -f "$TMP/server" "$TOXIPROXY"
      echo "install-chaos-tools: toxiproxy-server $TOXIPROXY_VERSION built ($TOXIPROXY)"
    else
      echo "install-chaos-tools: building toxiproxy-server $TOXIPROXY_VERSION with $GO failed (the Toxiproxy tests will skip)" >&2
      failed=1
    fi
    rm -rf "$TMP"
  fi
fi

exit $failed
