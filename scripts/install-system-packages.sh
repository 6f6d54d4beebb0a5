#!/usr/bin/env bash
# Install the Debian packages medsec needs, only those missing. Idempotent.
# Usage: scripts/install-system-packages.sh [run|test]
set -euo pipefail
want=(mosquitto:mosquitto mosquitto_sub:mosquitto-clients)
if [ "${1:-run}" = test ]; then
  want+=(chromium:chromium haproxy:haproxy docker-compose:docker-compose pg_ctl:postgresql)
fi
missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  if [ "$cmd" = pg_ctl ]; then
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
