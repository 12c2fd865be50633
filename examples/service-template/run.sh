#!/bin/sh
# Runs as TIN_SERVICE_UID. Everything worth keeping goes under /data (the NAS); the container itself is
# disposable.
set -eu
mkdir -p /data/www
echo "hello from ${TIN_CATALOG_SERVICE} on ${TIN_MACHINE_NAME}-${TIN_SERVICE_ENVIRONMENT}" >/data/www/index.html
echo "${TIN_CATALOG_SERVICE}: serving /data/www on port ${TIN_PORT_0}"
httpd -f -p "${TIN_PORT_0}" -h /data/www &
server=$!
trap 'kill "$server"; exit 0' TERM INT   # PID 1 must pass docker stop's SIGTERM on
wait "$server"
