#!/usr/bin/env bash
# The main job, end to end, on the bundled example:
#   1. installs what a fresh machine lacks, builds the two local images and SDP;
#   2. makes git repositories from examples/ (main + feature branches);
#   3. starts an OCP stand-in and SDP in dev mode (controller + agents micro and gateway);
#   4. applies examples/specs and waits until the sandbox is Ready;
#   5. shows one request through the sandbox's gateway answered by the sandbox's
#      service (its branch in the answer) and one answered by the OCP stand-in.
# Then it tears everything down, unless --keep is given; `--stop` tears down
# what an earlier `--keep` left running.
#
# usage: examples/demo.sh [--keep | --stop]
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
stop_only=false
case "${1:-}" in
  --keep) keep=true ;;
  --stop) stop_only=true ;;
  "") ;;
  *) echo "usage: $0 [--keep | --stop]" >&2; exit 64 ;;
esac

DEMO=/tmp/sdp-demo          # the example specs name repositories under /tmp/sdp-demo/git
OCP_PORT=9900
CONTROLLER=http://127.0.0.1:3452
export SDP_CONTROLLER=$CONTROLLER

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

SDPCTL=$PWD/target/release/sdpctl
AGENT=$PWD/target/release/sdp-agent

cleanup() {
  step "Tearing down"
  "$SDPCTL" delete sandbox alice-checkout >/dev/null 2>&1 || true
  # The agents remove the sandbox's containers and checkouts; wait for that.
  for _ in $(seq 1 60); do
    [ -z "$(docker ps -aq --filter label=sdp.sandbox=alice-checkout)" ] && break
    sleep 0.5
  done
  local pid=${DEV_PID:-$(cat "$DEMO/dev.pid" 2>/dev/null || true)}
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$DEMO/dev.pid"
  # If dev mode was already gone, nothing removed the sandbox's containers.
  leftovers=$(docker ps -aq --filter label=sdp.managed=true --filter label=sdp.sandbox=alice-checkout)
  [ -n "$leftovers" ] && docker rm -f $leftovers >/dev/null
  docker rm -f sdp-demo-ocp >/dev/null 2>&1 || true
  echo "demo: stopped (logs were in $DEMO/dev.log)"
}

if $stop_only; then
  cleanup
  exit 0
fi

step "Installing what is missing, building images and SDP"
bash scripts/install-deps.sh
bash examples/images/build.sh
echo "demo: compiling SDP in release mode (several minutes the first time)"
cargo build --release -p sdp-agent -p sdpctl

if curl -fsS "$CONTROLLER/healthz" >/dev/null 2>&1; then
  echo "demo: something already answers on $CONTROLLER (an earlier demo with --keep?); stop it first" >&2
  exit 1
fi
BRIDGE=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
[ -n "$BRIDGE" ] || BRIDGE=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
echo "demo: containers reach the host through Docker's bridge at $BRIDGE"

step "Making the example's git repositories (main + feature branches)"
docker rm -f sdp-demo-ocp >/dev/null 2>&1 || true
rm -rf "$DEMO/dev"
bash examples/make-repos.sh "$DEMO/git" "$BRIDGE:$OCP_PORT"

step "Starting the OCP stand-in (the example service from main) on $BRIDGE:$OCP_PORT"
mkdir -p "$DEMO/ocp"
(cd examples/service && CGO_ENABLED=0 go build -o "$DEMO/ocp/service" .)
docker run -d --init --name sdp-demo-ocp --label sdp.demo=ocp \
  -v "$DEMO/ocp:/app:ro" -e SERVICE_NAME=ocp-baseline -e BRANCH=main \
  -p "$BRIDGE:$OCP_PORT:8080" sdp/runtime:busybox /app/service >/dev/null

step "Starting SDP in dev mode: controller on $CONTROLLER, agents micro and gateway"
"$AGENT" dev --data-dir "$DEMO/dev" --agent micro --agent gateway >"$DEMO/dev.log" 2>&1 &
DEV_PID=$!
echo "$DEV_PID" >"$DEMO/dev.pid"
$keep || trap cleanup EXIT
for _ in $(seq 1 50); do curl -fsS "$CONTROLLER/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

step "sdpctl apply -f examples/specs --wait"
"$SDPCTL" apply -f examples/specs --wait --timeout 5m

step "sdpctl describe sandbox alice-checkout"
"$SDPCTL" describe sandbox alice-checkout

step "A request for eredar through the sandbox's gateway: answered by the sandbox (feature/PAY-123)"
echo "\$ curl http://$BRIDGE:8101/eredar/whoami"
curl -fsS "http://$BRIDGE:8101/eredar/whoami"

step "A request for ledger through the same gateway: answered by the OCP stand-in"
echo "\$ curl http://$BRIDGE:8101/ledger/whoami"
curl -fsS "http://$BRIDGE:8101/ledger/whoami"

if $keep; then
  cat <<EOF

The sandbox keeps running (dev mode pid $DEV_PID, log $DEMO/dev.log). Try:
  $SDPCTL get sandboxes
  $SDPCTL describe sandbox alice-checkout
  curl http://$BRIDGE:8101/
Stop everything (sandbox containers, dev mode, OCP stand-in) with:
  bash examples/demo.sh --stop
EOF
fi
