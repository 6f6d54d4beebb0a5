#!/bin/sh
# Read the dashboard account's broker password from its Docker secret (never from the image
# or compose.yaml), then start Node-RED as the image does.
set -eu
if [ -r /run/secrets/mqtt_dashboard ]; then
    MEDSEC_MQTT_PASSWORD=$(cat /run/secrets/mqtt_dashboard)
    export MEDSEC_MQTT_PASSWORD
fi
if [ -r /run/secrets/nodered_editor_password ]; then
    MEDSEC_EDITOR_PASSWORD=$(cat /run/secrets/nodered_editor_password)
    export MEDSEC_EDITOR_PASSWORD
fi
if [ -r /run/secrets/nodered_credential_secret ]; then
    NODE_RED_CREDENTIAL_SECRET=$(cat /run/secrets/nodered_credential_secret)
    export NODE_RED_CREDENTIAL_SECRET
fi
cd /usr/src/node-red
exec npm --no-update-notifier --no-fund start --cache /data/.npm -- --userDir /data --settings /opt/medsec/settings.js
