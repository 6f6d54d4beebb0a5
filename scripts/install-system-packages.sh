#!/usr/bin/env bash
# Install the Debian packages medsec needs, only those missing. Idempotent.
# Usage: scripts/install-system-packages.sh [run|test|containers]
#   containers: what `make images` and the compose tests need (rootful Podman, no Docker engine)
set -euo pipefail
want=(mosquitto:mosquitto mosquitto_sub:mosquitto-clients)
# netavark sets up container networks with iptables; Debian lists it only as a recommendation.
containers=(podman:podman buildah:buildah podman-compose:podman-compose debootstrap:debootstrap
            runc:runc /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns /usr/sbin/iptables:iptables
            docker-compose:docker-compose openssl:openssl)
case "${1:-run}" in
  test) want+=(chromium:chromium haproxy:haproxy pg_ctl:postgresql "${containers[@]}") ;;
  containers) want=("${containers[@]}") ;;
esac
missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  if [ "${cmd:0:1}" = / ]; then
    [ -x "$cmd" ] || missing+=("$pkg")
  elif [ "$cmd" = pg_ctl ]; then
    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=("$pkg")
  elif ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
