# The Python services of medsec (auth, keyadmin, proxy, publisher, dispatch): one image,
# the service chosen by MEDSEC_SERVICE. Runs as a non-root user on a read-only root
# filesystem (compose.yaml gives it a tmpfs or a volume for $MEDSEC_HOME).
FROM python:3.11-slim-bookworm

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/medsec --no-create-home medsec \
 && install -d -o medsec -g medsec -m 0700 /var/lib/medsec \
 && install -d -o medsec -g medsec -m 0700 /run/medsec-auth

WORKDIR /opt/medsec
COPY pyproject.toml ./
COPY services ./services
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY docker/entrypoint.py /usr/local/bin/medsec-entrypoint
RUN chmod 0755 /usr/local/bin/medsec-entrypoint

ENV MEDSEC_HOME=/var/lib/medsec \
    MEDSEC_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# The service named by MEDSEC_SERVICE answers where its clients reach it (medsec healthcheck).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["medsec", "healthcheck"]
ENTRYPOINT ["medsec-entrypoint"]
