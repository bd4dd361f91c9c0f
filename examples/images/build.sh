#!/usr/bin/env bash
# Builds the two local images SDP's example and tests run on. No registry is
# reachable, so both are imported from root filesystems made of Debian packages.
# Skips an image that already exists (delete it with `docker rmi` to rebuild).
#
#   sdp/runtime:busybox   busybox-static: runs statically linked Go services
#   sdp/php-apache:bookworm  debootstrap'd Debian with apache2 + mod_php (gateway)
#   sdp/php-apache:opcache-strict  the same, with OPcache revalidating only every
#                            60 s (as tuned CMS images do): the gateway tests
#                            prove SDP's patches are served at once anyway (C11)
set -euo pipefail

RUNTIME_IMAGE=${SDP_RUNTIME_IMAGE:-sdp/runtime:busybox}
GATEWAY_IMAGE=${SDP_GATEWAY_IMAGE:-sdp/php-apache:bookworm}
STRICT_IMAGE=${SDP_STRICT_IMAGE:-sdp/php-apache:opcache-strict}
here=$(cd "$(dirname "$0")" && pwd)

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The mirror apt already uses on this host, so no other address is contacted.
debian_mirror() {
  local m
  m=$(grep -rhoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
      awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

build_runtime() {
  if exists "$RUNTIME_IMAGE"; then echo "images: $RUNTIME_IMAGE exists, skipping"; return; fi
  [ -x /bin/busybox ] || { echo "images: /bin/busybox missing: apt-get install busybox-static" >&2; exit 1; }
  local root; root=$(mktemp -d); trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,src,proc,sys,dev}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/bin' --change 'WORKDIR /src' --change 'CMD ["/bin/sh"]' \
    --message 'sdp runtime: busybox-static' - "$RUNTIME_IMAGE" >/dev/null
  echo "images: built $RUNTIME_IMAGE"
}

build_gateway() {
  if exists "$GATEWAY_IMAGE"; then echo "images: $GATEWAY_IMAGE exists, skipping"; return; fi
  command -v debootstrap >/dev/null || { echo "images: debootstrap missing: apt-get install debootstrap" >&2; exit 1; }
  local root mirror; root=$(mktemp -d); mirror=$(debian_mirror)
  trap 'rm -rf "$root"' RETURN
  echo "images: debootstrap bookworm from $mirror (about a minute)"
  debootstrap --variant=minbase --include=apache2,libapache2-mod-php bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -20 "$root.log" >&2; echo "images: debootstrap failed (log: $root.log)" >&2; exit 1; }
  rm -f "$root.log"
  install -m 0644 "$here/gateway/000-default.conf" "$root/etc/apache2/sites-available/000-default.conf"
  install -m 0755 "$here/gateway/apache2-foreground" "$root/usr/local/bin/apache2-foreground"
  # Logs go to the container's stdout/stderr, as `docker logs` expects.
  ln -sfT /proc/self/fd/1 "$root/var/log/apache2/access.log"
  ln -sfT /proc/self/fd/2 "$root/var/log/apache2/error.log"
  ln -sfT /proc/self/fd/1 "$root/var/log/apache2/other_vhosts_access.log"
  echo "ServerName localhost" >"$root/etc/apache2/conf-available/servername.conf"
  chroot "$root" a2enconf -q servername >/dev/null
  chroot "$root" a2enmod -q rewrite >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --exclude=./proc --exclude=./sys --exclude=./dev -c . | docker import \
    --change 'ENV APACHE_DOCUMENT_ROOT=/var/www/html' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 80' --change 'CMD ["/usr/local/bin/apache2-foreground"]' \
    --message 'sdp gateway runtime: apache2 + mod_php (bookworm)' - "$GATEWAY_IMAGE" >/dev/null
  echo "images: built $GATEWAY_IMAGE"
}

build_strict() {
  if exists "$STRICT_IMAGE"; then echo "images: $STRICT_IMAGE exists, skipping"; return; fi
  local c=sdp-image-build-opcache-strict
  docker rm -f "$c" >/dev/null 2>&1 || true
  docker run --name "$c" "$GATEWAY_IMAGE" /bin/sh -c \
    'for d in /etc/php/*/apache2/conf.d; do printf "opcache.enable=1\nopcache.validate_timestamps=1\nopcache.revalidate_freq=60\n" >"$d/99-opcache-strict.ini"; done' >/dev/null
  docker commit --change 'CMD ["/usr/local/bin/apache2-foreground"]' \
    "$c" "$STRICT_IMAGE" >/dev/null
  docker rm -f "$c" >/dev/null
  echo "images: built $STRICT_IMAGE"
}

case "${1:-all}" in
  runtime) build_runtime ;;
  gateway) build_gateway ;;
  strict) build_gateway; build_strict ;;
  all) build_runtime; build_gateway; build_strict ;;
  *) echo "usage: $0 [runtime|gateway|strict|all]" >&2; exit 64 ;;
esac
