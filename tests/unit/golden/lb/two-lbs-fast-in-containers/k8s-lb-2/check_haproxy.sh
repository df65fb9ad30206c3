#!/bin/bash
# Managed by kubitect: exit 0 while the local HAProxy answers its health endpoint.
# Pure bash (/dev/tcp), so no curl is needed on the node; a stopped HAProxy refuses at once.
exec 3<>/dev/tcp/127.0.0.1/8404 || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
IFS= read -r -t 0.8 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200"*) exit 0 ;;
esac
exit 1
