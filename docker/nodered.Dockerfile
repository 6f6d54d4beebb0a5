# Node-RED with node-red-contrib-medsec, Dashboard 2.0 and the medsec flows.
# Secrets (the read-only `dashboard` broker password, the admin token, the editor password)
# come from Docker secrets; the shipped flows reference them as ${MEDSEC_NR_*} variables.
FROM nodered/node-red:4.1-20

USER root
COPY nodered/node-red-contrib-medsec /opt/node-red-contrib-medsec
RUN cd /usr/src/node-red \
 && npm install --omit=dev --no-audit --no-fund /opt/node-red-contrib-medsec @flowfuse/node-red-dashboard@~1.31.0 \
 && npm cache clean --force
COPY --chown=node-red:node-red nodered/flows.json /data/flows.json
# One settings template for the local stack and the container (services/nodered/settings.js.tmpl),
# rendered at start by nodered/tools/render-settings.js from the Docker secrets.
COPY services/nodered/settings.js.tmpl /opt/medsec/settings.js.tmpl
COPY nodered/tools/render-settings.js /opt/medsec/render-settings.js
COPY docker/nodered-creds.js /opt/medsec/nodered-creds.js
COPY docker/nodered-entrypoint.sh /usr/local/bin/medsec-nodered
RUN chmod 0755 /usr/local/bin/medsec-nodered
USER node-red
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["node", "-e", "require('http').get('http://127.0.0.1:1880/',r=>process.exit(r.statusCode<500?0:1)).on('error',()=>process.exit(1))"]
ENTRYPOINT ["medsec-nodered"]
