#!/bin/sh
# Write today's edition into the volume, then serve the volume on TIN_PORT_0.
set -eu
mkdir -p /site/editions
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "$stamp" >>/site/editions/log
count=$(wc -l </site/editions/log)
cat >/site/index.html <<HTML
<!doctype html>
<title>gazette</title>
<h1>The ${TIN_MACHINE_NAME} gazette</h1>
<p>Edition ${count}, printed ${stamp} by uid $(id -u) on ${TIN_MACHINE_NAME}-${TIN_SERVICE_ENVIRONMENT}
(sheet ${TIN_SHEET}), port ${TIN_PORT_0}.</p>
HTML
echo "gazette: edition ${count} printed ${stamp}; serving /site on port ${TIN_PORT_0}"
# As PID 1 the shell must pass `docker stop`'s SIGTERM on, or the stop waits for its timeout.
httpd -f -p "${TIN_PORT_0}" -h /site &
server=$!
trap 'kill "$server"; exit 0' TERM INT
wait "$server"
