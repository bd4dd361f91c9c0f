#!/usr/bin/env bash
# Installs the host packages SDP's demo and tests need, skipping what is present.
# Idempotent: a second run installs nothing and makes no network calls.
set -euo pipefail

need=()
command -v go >/dev/null || need+=(golang-go)
command -v debootstrap >/dev/null || need+=(debootstrap)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v git >/dev/null || need+=(git)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v curl >/dev/null || need+=(curl)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

if ! docker info >/dev/null 2>&1; then
  echo "install-deps: the Docker daemon is not reachable (docker info failed); SDP needs a running Docker engine" >&2
  exit 1
fi
