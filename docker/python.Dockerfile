# The Python services of medsec (auth, keyadmin, proxy, publisher, dispatch) and the single-host
# broker (Mosquitto, configured by medsec): one image, the service chosen by MEDSEC_SERVICE.
# Runs as a non-root user on a read-only root filesystem (compose gives it volumes for $MEDSEC_HOME).
#
# BASE_IMAGE: any Debian bookworm image. The default is the public one; scripts/build-images.sh
# passes a base made from Debian's packages with debootstrap (no registry needed).
# Layers: system packages, then Python dependencies, then the code: a code change rebuilds only the
# last two small layers.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

# The project as a wheel, with auth's compiled key loop (services/auth/_keyscan.c, built by
# setup.py): the compiler and the headers stay in this stage, the image gets the wheel only.
FROM ${BASE_IMAGE} AS wheel
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev libssl-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir -q --upgrade pip setuptools wheel
WORKDIR /src
COPY pyproject.toml setup.py ./
COPY services ./services
# No compiler fallback here: an image without the fast loop must fail to build, not run slow.
RUN /opt/build/bin/pip wheel --no-cache-dir -q --no-deps --no-build-isolation -w /wheels . \
 && /opt/build/bin/python -c "import zipfile, glob; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
assert any(n.startswith('services/auth/_keyscan') and n.endswith('.so') for n in names), names"

FROM ${BASE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates tini mosquitto openssl \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/medsec --no-create-home medsec \
 && install -d -o medsec -g medsec -m 0700 /var/lib/medsec \
 && install -d -o medsec -g medsec -m 0700 /run/medsec-auth

# Dependencies only (from pyproject.toml), so they stay cached while the code changes.
WORKDIR /opt/medsec
# pip's own CA list does not know a local CA the base may trust (see scripts/build-images.sh).
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -q --upgrade pip setuptools wheel \
 && /opt/venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-cache-dir -q -r /tmp/requirements.txt \
 && rm -rf /tmp/requirements.txt /root/.cache

# The code, last: the wheel of the first stage (the same Debian Python, so the same ABI).
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/venv/bin/pip install --no-cache-dir -q --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels /root/.cache
COPY docker/entrypoint.py /usr/local/bin/medsec-entrypoint
RUN chmod 0755 /usr/local/bin/medsec-entrypoint

ENV PATH=/opt/venv/bin:$PATH \
    MEDSEC_HOME=/var/lib/medsec \
    MEDSEC_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# The service named by MEDSEC_SERVICE answers where its clients reach it (medsec healthcheck).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["medsec", "healthcheck"]
# tini as PID 1: forwards SIGTERM and reaps, so `stop` takes well under 2 s.
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/venv/bin/python", "/usr/local/bin/medsec-entrypoint"]
