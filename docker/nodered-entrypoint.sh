#!/bin/sh
# Node-RED in compose: the settings medsec's local stack uses, rendered from Docker secret files
# (never the image or compose.yaml); settings.js hands the flows their secrets as the
# ${MEDSEC_NR_*} variables they reference; then start Node-RED as the image does.
set -eu
# Node-RED's settings from the shared template, its secrets.json (login hashes by role, the
# credential secret, the dashboard broker password, the key-admin token) from the Docker secrets.
cd /usr/src/node-red
node /opt/medsec/render-settings.js /opt/medsec/settings.js.tmpl /data
node /opt/medsec/nodered-creds.js /data
exec npm --no-update-notifier --no-fund start --cache /data/.npm -- --userDir /data --settings /data/settings.js
