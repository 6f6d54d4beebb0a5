# HAProxy from Debian's package: the load balancer in front of the proxies and the brokers.
# The config is mounted by compose (docker/haproxy/*.cfg).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
USER haproxy
# -W: master-worker, so SIGTERM/SIGUSR1 are handled; -db: stay in the foreground.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/sbin/haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
