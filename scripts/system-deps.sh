#!/usr/bin/env bash
# Installs the system programs the tests and benchmarks use (curl, wrk, openssl,
# slowhttptest for the hostile-client tests, redis-server for the tests of rate limits
# shared through Redis, and chromium for the browser tests, driven by Playwright) when
# missing.
# With the argument "bench-static" (make bench-static), nginx too: the static-file
# benchmark compares bastion with it; the tests never need it.
# With "bench-tls": nginx and testssl.sh, for bench/tls.py and the TLS configuration scan
# (docs/tls.md). The TLS tests need only openssl, which Debian always has.
set -euo pipefail
need=()
for prog in curl wrk openssl slowhttptest redis-server; do
    command -v "$prog" >/dev/null 2>&1 || need+=("$prog")
done
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    need+=(chromium)
fi
if [ "${1:-}" = "bench-tls" ] && ! command -v testssl >/dev/null 2>&1; then
    need+=(testssl.sh)
fi
if [ "${1:-}" = "bench-static" ] || [ "${1:-}" = "bench-tls" ]; then :; else set -- ""; fi
if [ -n "${1:-}" ] && ! command -v nginx >/dev/null 2>&1 \
    && [ ! -x /usr/sbin/nginx ]; then
    need+=(nginx-light)
fi
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: please install: ${need[*]}" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
