# Node-RED with node-red-contrib-medsec, Dashboard 2.0 and the medsec flows, installed from the
# npm registry with the project's lock file (nodered/package-lock.json): the same versions as
# `make -C nodered install`. Secrets (the read-only `dashboard` broker password, the admin token,
# the editor password) come from compose secrets; the flows reference them as ${MEDSEC_NR_*}.
#
# BASE_IMAGE: a Debian bookworm image; Node.js comes from Debian's packages when it has none.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && pkgs="tini ca-certificates"; command -v node >/dev/null || pkgs="$pkgs nodejs npm"; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --system --uid 10002 --user-group --home-dir /data --no-create-home node-red \
 && install -d -o node-red -g node-red -m 0700 /data

# Dependencies from the manifests and the lock only: cached while the nodes' code changes.
WORKDIR /usr/src/node-red
# Node's own CA list does not know a local CA the base may trust (see scripts/build-images.sh).
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
COPY nodered/package.json nodered/package-lock.json ./
COPY nodered/node-red-contrib-medsec/package.json ./node-red-contrib-medsec/package.json
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && npm cache clean --force 2>/dev/null; rm -rf /root/.npm

# The code, last.
COPY nodered/node-red-contrib-medsec ./node-red-contrib-medsec
COPY --chown=node-red:node-red nodered/flows.json /opt/medsec/flows.json
# One settings template for the local stack and the container (services/nodered/settings.js.tmpl),
# rendered at start by nodered/tools/render-settings.js from the compose secrets.
COPY services/nodered/settings.js.tmpl /opt/medsec/settings.js.tmpl
COPY nodered/tools/render-settings.js /opt/medsec/render-settings.js
COPY docker/nodered-creds.js /opt/medsec/nodered-creds.js
COPY docker/nodered-entrypoint.sh /usr/local/bin/medsec-nodered
RUN chmod 0755 /usr/local/bin/medsec-nodered
USER node-red
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["node", "-e", "require('http').get('http://127.0.0.1:1880/',r=>process.exit(r.statusCode<500?0:1)).on('error',()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/medsec-nodered"]
