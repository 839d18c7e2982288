#!/usr/bin/env bash
# restore-test benchmark: where the time of `pgark restore-test LATEST` goes
# on a pgbench cluster, split into restore, recovery and checks (the
# figures restore-test records), with peak RSS of the pgark process.
#
#   scripts/bench-restore-test.sh      # as root, from the project root
#
# What it does:
#   1. cargo build --release of the work tree (CARGO_TARGET_DIR, default
#      target), or takes PGARK=/path/to/pgark; copies it to $BENCH_DIR/bin.
#   2. As postgres: initdb --data-checksums, archive_command = pgark
#      wal-push into a local repository, pgbench -i -s $SCALE, backup-push,
#      then pgbench -T $LOAD_SECONDS (-c 2) so that recovery has WAL to
#      replay, pg_switch_wal, and the source is stopped once every segment
#      is archived.
#   3. $RUNS rounds of `pgark restore-test LATEST --json` (as root: the
#      server runs as postgres), each under /usr/bin/time, then one round
#      with --target-immediate (recovery of the backup alone).
#   4. Prints per round: wall, restore, recovery, checks, WAL replayed,
#      peak RSS; and the medians.
# Environment: BENCH_DIR (/tmp/pgark-bench-rt; wiped), SCALE (30), RUNS (3),
# LOAD_SECONDS (30), PGBIN (newest /usr/lib/postgresql/*/bin), PORT (54341).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-rt}
SCALE=${SCALE:-30}
RUNS=${RUNS:-3}
LOAD_SECONDS=${LOAD_SECONDS:-30}
PORT=${PORT:-54341}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
[ "$(id -u)" = 0 ] || { echo "run as root (PostgreSQL runs as postgres)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || apt-get install -y -q time >/dev/null

if [ -z "${PGARK:-}" ]; then
    cargo build --release --locked -q
    PGARK=${CARGO_TARGET_DIR:-target}/release/pgark
fi
case $BENCH_DIR in /tmp/*) ;; *) echo "BENCH_DIR must be under /tmp" >&2; exit 2 ;; esac
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/bin" "$BENCH_DIR/results"
cp "$PGARK" "$BENCH_DIR/bin/pgark"
chmod 755 "$BENCH_DIR" "$BENCH_DIR/bin" "$BENCH_DIR/bin/pgark"
chown postgres "$BENCH_DIR"
B=$BENCH_DIR/bin/pgark
REPO=$BENCH_DIR/repo
SRC=$BENCH_DIR/src
as_pg() { runuser -u postgres -- "$@"; }
cleanup() { as_pg "$PGBIN/pg_ctl" -D "$SRC" -m immediate stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== source cluster: pgbench scale $SCALE, $LOAD_SECONDS s of load after the backup"
as_pg "$PGBIN/initdb" -D "$SRC" --data-checksums -U postgres >/dev/null
cat >> "$SRC/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$BENCH_DIR'
archive_mode = on
archive_command = '$B --repo $REPO wal-push %p'
max_wal_size = 4GB
CONF
as_pg "$PGBIN/pg_ctl" -D "$SRC" -l "$BENCH_DIR/src.log" -w start >/dev/null
export PGHOST=$BENCH_DIR PGPORT=$PORT PGUSER=postgres
as_pg env PGHOST=$PGHOST PGPORT=$PORT "$PGBIN/pgbench" -q -i -s "$SCALE" postgres >/dev/null 2>&1
as_pg env PGHOST=$PGHOST PGPORT=$PORT "$B" --repo "$REPO" backup-push "$SRC" --pg-conn "host=$BENCH_DIR port=$PORT user=postgres" 2>/dev/null
as_pg env PGHOST=$PGHOST PGPORT=$PORT "$PGBIN/pgbench" -c 2 -T "$LOAD_SECONDS" postgres 2>/dev/null | grep -E "^tps|transactions actually"
as_pg env PGHOST=$PGHOST PGPORT=$PORT "$PGBIN/psql" -qAtc "select pg_switch_wal()" postgres >/dev/null
for _ in $(seq 1 120); do
    ready=$(ls "$SRC/pg_wal/archive_status/" | grep -c ready || true)
    [ "$ready" = 0 ] && break
    sleep 1
done
as_pg "$PGBIN/pg_ctl" -D "$SRC" -m fast stop >/dev/null
echo "repository: $(du -sh "$REPO" | cut -f1), WAL objects: $(find "$REPO/wal" -type f | wc -l)"
unset PGHOST PGPORT PGUSER

run() { # label, extra args...
    local label=$1; shift
    local out=$BENCH_DIR/results/$label
    sync
    /usr/bin/time -v -o "$out.time" "$B" --repo "$REPO" restore-test LATEST --json "$@" > "$out.json" 2> "$out.err" || {
        echo "$label failed:"; tail -5 "$out.err"; exit 1; }
    python3 - "$out.json" "$out.time" "$label" <<'PY'
import json, sys, re
r = json.load(open(sys.argv[1]))
t = open(sys.argv[2]).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
h, m, s = wall.groups()
wall = (int(h or 0) * 3600) + int(m) * 60 + float(s)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
print(f"{sys.argv[3]:<12} wall {wall:6.2f} s  restore {r['restore_seconds']:6.2f} s  recovery {r['recovery_seconds']:6.2f} s  "
      f"checks {r['checks_seconds']:6.2f} s  WAL replayed {r['wal_replayed_bytes'] / 2**20:7.1f} MiB  peak RSS {rss:5.1f} MiB  "
      f"{r['outcome']} ({', '.join(c['name'] + ' ' + c['outcome'] for c in r['checks'] if c['name'] in ('pg_amcheck', 'pg_checksums'))})")
PY
}
echo "== restore-test LATEST ($RUNS rounds), then --target-immediate"
for i in $(seq 1 "$RUNS"); do run "latest-$i"; done
run immediate --target-immediate
python3 - "$BENCH_DIR/results" "$RUNS" <<'PY'
import json, sys, statistics
d, n = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{d}/latest-{i}.json")) for i in range(1, n + 1)]
med = lambda k: statistics.median(r[k] for r in rs)
print(f"medians: restore {med('restore_seconds'):.2f} s, recovery {med('recovery_seconds'):.2f} s, checks {med('checks_seconds'):.2f} s")
PY
