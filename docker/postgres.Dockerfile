# PostgreSQL from Debian's package: the key store of the compose deployment (devices, stations,
# audit chain). Data on a volume; the password of the `medsec` role comes from a compose secret.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && install -d -o postgres -g postgres -m 0700 /var/lib/medsec-pg \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY docker/postgres-entrypoint.sh /usr/local/bin/medsec-postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/medsec-pg/data
USER postgres
HEALTHCHECK --interval=3s --timeout=3s --start-period=20s --retries=5 \
    CMD ["pg_isready", "-q", "-h", "127.0.0.1", "-U", "medsec", "-d", "medsec"]
# SIGINT is PostgreSQL's "fast shutdown": sessions are cut, data is flushed, it exits in well under 2 s.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "/usr/local/bin/medsec-postgres"]
