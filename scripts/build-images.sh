#!/usr/bin/env bash
# Build every image of the compose deployment with Podman, without any registry:
#   1. installs podman, buildah, podman-compose, debootstrap, runc, docker-compose if missing;
#   2. uses scripts/containers.conf (CONTAINERS_CONF) unless the caller set one;
#   3. makes a Debian bookworm base image with debootstrap, once (reused while it exists);
#   4. builds medsec/services (also the single-host Mosquitto), medsec/nodered, medsec/haproxy,
#      medsec/postgres on that base. Podman's layer cache makes a rebuild after a code change
#      take seconds.
# Usage: scripts/build-images.sh [IMAGE...]   (default: all four; names: services nodered haproxy postgres)
# Env:   MEDSEC_BASE_IMAGE  base to build on (default localhost/medsec-base:bookworm, made here)
#        MEDSEC_VERSION     image tag (default 0.1.0, what the compose files use)
#        MEDSEC_REBUILD_BASE=1  make the base again (e.g. for Debian security updates)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-packages.sh containers
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
BASE=${MEDSEC_BASE_IMAGE:-localhost/medsec-base:bookworm}
VERSION=${MEDSEC_VERSION:-0.1.0}
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo

make_base() {
  local rootfs
  rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/medsec-rootfs.XXXXXX")
  trap '$SUDO rm -rf "$rootfs"' RETURN
  echo "making the base image $BASE with debootstrap (about a minute, once)"
  $SUDO debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
  $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # The base trusts what this host trusts locally (e.g. a TLS-inspecting proxy's CA): the images'
  # ca-certificates package adds /usr/local/share/ca-certificates to their bundle.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    $SUDO install -d "$rootfs/usr/local/share/ca-certificates"
    $SUDO cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  $SUDO tar -C "$rootfs" -c . | $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" \
    podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
}

if [ "${MEDSEC_REBUILD_BASE:-0}" = 1 ] || ! $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" podman image exists "$BASE"; then
  case "$BASE" in
    localhost/*) make_base ;;
    *) echo "base image $BASE is not present; pull it first" >&2; exit 1 ;;
  esac
fi

images=("$@")
[ ${#images[@]} -eq 0 ] && images=(services nodered haproxy postgres)
for name in "${images[@]}"; do
  case "$name" in
    services) file=docker/python.Dockerfile ;;
    nodered|haproxy|postgres) file=docker/$name.Dockerfile ;;
    *) echo "unknown image $name (services nodered haproxy postgres)" >&2; exit 2 ;;
  esac
  start=$(date +%s)
  $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" podman build -q --layers --format docker --build-arg "BASE_IMAGE=$BASE" \
    -f "$file" -t "medsec/$name:$VERSION" . >/dev/null
  echo "built medsec/$name:$VERSION in $(( $(date +%s) - start )) s"
done
