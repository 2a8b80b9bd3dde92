#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests and benchmarks.
#   scripts/pg-throwaway.sh DIR [PORT]    start one with its files in DIR; prints its URL
#   scripts/pg-throwaway.sh --durable DIR [PORT]
#                                         the same with the server's default durability: no
#                                         fsync=off, full_page_writes=off (for honest benchmarks)
#   scripts/pg-throwaway.sh --stop DIR    stop it at once and delete DIR
# Needs Debian's postgresql package. As root, the server runs as the postgres user.
set -euo pipefail
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$BIN/initdb" ] || { echo "PostgreSQL not installed (apt-get install postgresql)" >&2; exit 1; }
run=()
[ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
if [ "$1" = --stop ]; then
  "${run[@]}" "$BIN/pg_ctl" -D "$2/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$2"
  exit 0
fi
# Throwaway data need no crash safety: skipping fsync makes the tests faster.
fast="-c fsync=off -c full_page_writes=off"
if [ "$1" = --durable ]; then
  fast=""
  shift
fi
DIR=$1
PORT=${2:-55432}
mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
"${run[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync >"$DIR/initdb.log"
"${run[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -o \
  "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 $fast" start >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
