#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests; prints its URL.
#   scripts/pg-throwaway.sh DIR [PORT]      (stop it: pg_ctl -D DIR/data stop)
# Needs Debian's postgresql package. As root, the server runs as the postgres user.
set -euo pipefail
DIR=$1
PORT=${2:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/initdb" ] || { echo "PostgreSQL not installed (apt-get install postgresql)" >&2; exit 1; }
mkdir -p "$DIR"
run=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$DIR"
  run=(runuser -u postgres --)
fi
"${run[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync >"$DIR/initdb.log"
"${run[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -o \
  "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
