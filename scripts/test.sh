#!/usr/bin/env bash
# Runs every test of SDP on this machine: installs what is missing (packages,
# the two local images), checks formatting and lints, then runs the whole
# suite with nextest, end-to-end tests against the real Docker engine included.
# Set SDP_SKIP_DOCKER_TESTS=1 to skip the Docker tests explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ "${SDP_SKIP_DOCKER_TESTS:-}" != 1 ]; then
  bash examples/images/build.sh
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast
