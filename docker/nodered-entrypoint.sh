#!/bin/sh
# Node-RED in compose: secrets from compose secret files into the environment the medsec flows
# reference (${MEDSEC_NR_MQTT_PASSWORD}, ${MEDSEC_NR_ADMIN_TOKEN}), never into the image or
# compose.yaml; the shipped flows on first start; then Node-RED with medsec's settings.
set -eu
read_secret() { [ -r "/run/secrets/$1" ] && tr -d '\n' < "/run/secrets/$1"; }
MEDSEC_NR_MQTT_PASSWORD=$(read_secret mqtt_dashboard || true)
MEDSEC_NR_ADMIN_TOKEN=$(read_secret admin_token || true)
MEDSEC_EDITOR_PASSWORD=$(read_secret nodered_editor_password || true)
NODE_RED_CREDENTIAL_SECRET=$(read_secret nodered_credential_secret || true)
export MEDSEC_NR_MQTT_PASSWORD MEDSEC_NR_ADMIN_TOKEN MEDSEC_EDITOR_PASSWORD NODE_RED_CREDENTIAL_SECRET
# The volume hides the image's /data: copy the shipped flows once; later edits in the editor stay.
[ -f /data/flows.json ] || cp /opt/medsec/flows.json /data/flows.json
node /opt/medsec/nodered-creds.js /data
cd /usr/src/node-red
exec node node_modules/node-red/red.js --userDir /data --settings /usr/src/node-red/medsec-settings.js
