#!/bin/sh
# Node-RED in compose: the settings medsec's local stack uses, rendered from compose secret files
# (never the image or compose.yaml): its secrets.json (login hashes by role, the credential secret,
# the dashboard broker password, its read and manage key-admin tokens); settings.js hands the
# flows their secrets as the ${MEDSEC_NR_*} variables they reference.
set -eu
cd /usr/src/node-red
# The volume hides the image's /data: copy the shipped flows once; later edits in the editor stay.
[ -f /data/flows.json ] || cp /opt/medsec/flows.json /data/flows.json
node /opt/medsec/render-settings.js /opt/medsec/settings.js.tmpl /data
node /opt/medsec/nodered-creds.js /data
exec node node_modules/node-red/red.js --userDir /data --settings /data/settings.js
