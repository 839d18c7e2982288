#!/usr/bin/env bash
# Recovery through restore_command against PostgreSQL replaying the same WAL
# from its own pg_wal, in one run.
#
#   PGARK=target/release/pgark scripts/bench-recovery.sh    # as root
#
# What it does:
#   1. ../shared/bench/archive-queue.sh with RUNS=1 builds $B/snap (a
#      stopped cluster with 64 ready segments; its checkpoint is in the
#      first segment) and a pgBackRest repository pushed asynchronously,
#      unless $B/snap exists.
#   2. $RUNS rounds, before and after the rest, of:
#      - "local pg_wal": a copy of the snapshot with every segment left in
#        pg_wal, recovery.signal and restore_command = '/bin/false', so that
#        PostgreSQL replays the same WAL from pg_wal (the ceiling);
#   3. ../shared/bench/recovery.sh (two rounds of pgark, pgBackRest
#      archive-get, and pgBackRest --archive-async), once per
#      PGARK_FETCH_ARGS variant in $VARIANTS (separated by ";").
#      Timing is the same for all: from pg_ctl start until
#      pg_is_in_recovery() is false.
# Environment: B (/tmp/baq), RUNS (2), PORT (55602),
# VARIANTS (";--fetch-parallel 1"; the empty variant is the default).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-/tmp/baq}; RUNS=${RUNS:-2}; PORT=${PORT:-55602}
VARIANTS=${VARIANTS:-";--fetch-parallel 1"}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; }
if [ ! -d "$B/snap" ]; then
  PGARK=${PGARK:?PGARK=/path/to/pgark} B=$B SEGS=64 RUNS=1 ../shared/bench/archive-queue.sh
fi
[ -n "${PGARK:-}" ] && cp "$PGARK" "$B/bin/pgark"

local_pg_wal() {
  rm -rf "$B/rec"; cp -a "$B/snap" "$B/rec"
  rm -f "$B/rec/pgdata/pg_wal/archive_status/"*; chown -R postgres "$B/rec"
  sed -i "s#$B/src#$B/rec#g; s#^port=.*#port=$PORT#" "$B/rec/pgdata/postgresql.conf"
  printf "archive_mode=off\nrestore_command='/bin/false'\nrecovery_target_action=promote\n" >>"$B/rec/pgdata/postgresql.conf"
  touch "$B/rec/pgdata/recovery.signal"; chown postgres "$B/rec/pgdata/recovery.signal"
  local t0 t1
  t0=$(date +%s.%N)
  as_pg pg_ctl -D "$B/rec/pgdata" -l "$B/rec/pg.log" -w -t 600 start >/dev/null
  for _ in $(seq 6000); do
    [ "$(as_pg psql -h "$B/rec" -p "$PORT" -qAtX -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ] && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  as_pg pg_ctl -D "$B/rec/pgdata" -m immediate -w stop >/dev/null
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%-20s recovery done in %6.2f s\n", "local pg_wal", b-a}'
}

# recovery.sh runs two rounds of its three tools itself.
for _ in $(seq "$RUNS"); do local_pg_wal; done
IFS=';' read -ra variants <<<"$VARIANTS"
for v in "${variants[@]}"; do
  echo "# pgark wal-fetch ${v:-(default)}"
  B=$B PORT=$PORT PGARK_FETCH_ARGS="$v" bash ../shared/bench/recovery.sh
done
for _ in $(seq "$RUNS"); do local_pg_wal; done
