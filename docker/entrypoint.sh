#!/bin/sh
# The server container's entry point: `masante-admin init` (idempotent: configuration, KEK, audit key, TLS,
# schema; with MASANTE_DEMO=1 the demo's domains, accounts and ports), then the server in the foreground.
# The database is PostgreSQL, given by MASANTE_DATABASE_URL; every `[section] key` can be set by
# MASANTE_SECTION_KEY (see README.md). Everything the server keeps lives in the volume /var/lib/masante.
set -eu

if [ -z "${MASANTE_DATABASE_URL:-}" ]; then
    echo "masante-entrypoint: set MASANTE_DATABASE_URL (postgresql://user:password@host/db)" >&2
    exit 64
fi

demo=""
[ "${MASANTE_DEMO:-0}" = 1 ] && demo="--demo"

# the database may still be starting (compose waits for its health check; a plain `docker run` may not): 60 tries
tries=0
until masante-admin init $demo; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then
        echo "masante-entrypoint: \`masante-admin init\` kept failing (is the database at MASANTE_DATABASE_URL up?)" >&2
        exit 1
    fi
    sleep 1
done
exec masante-server
