#!/usr/bin/env bash
# docker-compose for a host with only Podman (rootful): medsec's compose files as with Docker.
#   scripts/podman-compose.sh up -d          (any docker-compose arguments; -f defaults to compose.single.yaml)
#   MEDSEC_COMPOSE_FILE=compose.yaml scripts/podman-compose.sh up -d   (the EMQX cluster)
# What it adds around Debian's docker-compose (v1):
#   - Podman's Docker API (`podman system service`) on /run/medsec-podman.sock, started if not running;
#   - scripts/containers.conf (CONTAINERS_CONF) unless one is set;
#   - on hosts without systemd (containers, some CI), a loop that runs the containers'
#     healthchecks (`podman healthcheck run`): Podman runs them from systemd timers, and
#     `depends_on: condition: service_healthy` waits for them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}
SOCK=${MEDSEC_PODMAN_SOCK:-/run/medsec-podman.sock}
RUN=${MEDSEC_PODMAN_RUN:-/run/medsec-podman}
mkdir -p "$RUN"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! alive "$RUN/service.pid"; then
  rm -f "$SOCK"
  nohup podman system service --time=0 "unix://$SOCK" >"$RUN/service.log" 2>&1 &
  echo $! >"$RUN/service.pid"
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
fi
if [ ! -d /run/systemd/system ] && ! alive "$RUN/health.pid"; then
  nohup bash -c 'while true; do
      for c in $(podman ps --filter label=com.docker.compose.project --format "{{.Names}}"); do
        podman healthcheck run "$c" >/dev/null 2>&1 || true
      done
      sleep 2
    done' >"$RUN/health.log" 2>&1 &
  echo $! >"$RUN/health.pid"
fi
export DOCKER_HOST="unix://$SOCK" COMPOSE_HTTP_TIMEOUT=${COMPOSE_HTTP_TIMEOUT:-300}
exec docker-compose -f "${MEDSEC_COMPOSE_FILE:-compose.single.yaml}" "$@"
