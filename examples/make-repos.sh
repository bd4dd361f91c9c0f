#!/usr/bin/env bash
# Makes the example's git repositories: eredar, ledger and billing (the Go
# example service) and erangel (the PHP gateway), each with a `main` branch,
# plus the feature branches the example sandbox runs:
#   eredar  feature/PAY-123      (a different greeting)
#   erangel feature/checkout-v2  (a banner in the route listing)
# The gateway's committed URL map points at OCP_ADDR, where the demo runs an
# OCP stand-in. Existing repositories are replaced.
#
# usage: make-repos.sh GIT_DIR OCP_ADDR     e.g. make-repos.sh /tmp/sdp-demo/git 172.17.0.1:9900
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 GIT_DIR OCP_HOST:PORT" >&2; exit 64; }
git_dir=$1; ocp=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$git_dir"
git_dir=$(cd "$git_dir" && pwd)

g() { git -c user.name="SDP example" -c user.email="example@sdp.invalid" -c init.defaultBranch=main "$@"; }

publish() { # $1: name, $2: work tree
  rm -rf "$git_dir/$1.git"
  g clone -q --bare "$2" "$git_dir/$1.git"
  rm -rf "$2"
}

for svc in eredar ledger billing; do
  work=$(mktemp -d)
  cp -r "$here/service/." "$work/"
  (cd "$work" && g init -q && g add -A && g commit -q -m "$svc: initial version")
  if [ "$svc" = eredar ]; then
    (cd "$work" && g checkout -q -b feature/PAY-123 &&
      sed -i 's/var greeting = "hello from main"/var greeting = "hello from feature\/PAY-123"/' main.go &&
      g commit -q -am "PAY-123: new greeting" && g checkout -q main)
  fi
  publish "$svc" "$work"
done

work=$(mktemp -d)
cp -r "$here/gateway/." "$work/"
sed -i "s#http://ocp.example.internal/#http://$ocp/#g" "$work/application/config/config.php"
(cd "$work" && g init -q && g add -A && g commit -q -m "erangel: gateway with OCP defaults")
(cd "$work" && g checkout -q -b feature/checkout-v2 &&
  sed -i "s/'gateway' => 'erangel'/'gateway' => 'erangel', 'banner' => 'checkout-v2'/" index.php &&
  g commit -q -am "checkout-v2: banner" && g checkout -q main)
publish erangel "$work"

echo "make-repos: eredar ledger billing erangel in $git_dir (OCP defaults -> http://$ocp/)"
