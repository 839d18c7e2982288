#!/usr/bin/env bash
# pgark status and pgark delete on a repository holding 50 backups and
# 20,000 archived WAL segments: how long `status` and `delete
# --retain-count 1 --confirm` take and how many requests they send, on S3
# (moto's server on 127.0.0.1) and, for reference, on a local directory, in
# ONE run, alternated round by round.
#
#   scripts/bench-retention.sh      # as root, from the project root
#
# What it does, each round (a fresh repository each time):
#   1. A throw-away cluster (initdb -k, as postgres) whose WAL was moved on
#      with pg_resetwal -l to timeline 1, log 0x50, so that the archive can
#      hold $WAL_OBJECTS older segments (20,000 reach log 0x4E);
#      archive_command /bin/true (backup-push runs with --archive-timeout 0).
#   2. $BACKUPS full backup-push runs into the repository (a second apart:
#      names carry the start time to the second).
#   3. $WAL_OBJECTS objects under wal/ named as archived segments
#      000000010000000000000001 onwards (64 bytes each: delete lists and
#      deletes, it never reads them), written with boto3 (32 threads) on
#      S3 and as files locally.
#   4. `pgark status --json --no-fail`, then `pgark delete --retain-count 1
#      --confirm` (as postgres, under /usr/bin/time: wall, CPU, peak RSS):
#      the delete removes all backups but the newest and every WAL segment
#      before its start, that is all $WAL_OBJECTS. On S3, moto's request
#      log counts the requests each command sent, by kind. Checked after:
#      one backup listed, no WAL object of the deleted range left.
# Results in $BENCH_DIR/results/{times.tsv,requests.tsv,summary.txt}.
#
# moto keeps objects in its Python process's memory and handles requests
# one at a time; a real S3 endpoint has more latency per request and takes
# many at once. The request count is what carries over.
#
# Environment: BENCH_DIR (/tmp/pgark-bench-retention, wiped), PORT (54361),
# MOTO_PORT (54362), WAL_OBJECTS (20000), BACKUPS (50), RUNS (3), PGARK (else a release
# build of the work tree), PGBIN (newest /usr/lib/postgresql/*/bin),
# MOTO_SERVER (/opt/pgark-test/moto/bin/moto_server).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-retention}
PORT=${PORT:-54361}
MOTO_PORT=${MOTO_PORT:-54362}
WAL_OBJECTS=${WAL_OBJECTS:-20000}
BACKUPS=${BACKUPS:-50}
RUNS=${RUNS:-3}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
MOTO_SERVER=${MOTO_SERVER:-/opt/pgark-test/moto/bin/moto_server}
PY=$(dirname "$MOTO_SERVER")/python

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-retention: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pgark run as postgres via runuser)"
[ -x "$MOTO_SERVER" ] || die "$MOTO_SERVER not found: run .ci/install-deps.sh (or set MOTO_SERVER)"
[ -x "$PGBIN/initdb" ] || die "no PostgreSQL in $PGBIN (set PGBIN)"
[ "$WAL_OBJECTS" -le 20480 ] || die "WAL_OBJECTS must fit below log 0x50 (at most 20480)"
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null

case $BENCH_DIR in /tmp/*) ;; *) die "BENCH_DIR must be under /tmp (it is wiped)" ;; esac
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/bin" "$BENCH_DIR/results" "$BENCH_DIR/work"
chown postgres "$BENCH_DIR/work" "$BENCH_DIR/results"
RES=$BENCH_DIR/results
WORK=$BENCH_DIR/work

MOTO_PID=
cleanup() {
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
  [ -f "$WORK/data/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ -z "${PGARK:-}" ]; then
  say "cargo build --release --bin pgark (work tree)"
  cargo build --release --locked --bin pgark
  PGARK=$ROOT/target/release/pgark
fi
install -m 0755 "$PGARK" "$BENCH_DIR/bin/pgark"
chmod 755 "$BENCH_DIR" "$BENCH_DIR/bin"
BIN=$BENCH_DIR/bin/pgark
say "$("$BIN" --version)"

say "moto on 127.0.0.1:$MOTO_PORT"
"$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$RES/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 120); do
  curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break
  sleep 0.5
done
curl -s -f -X PUT "http://127.0.0.1:$MOTO_PORT/bench" >/dev/null || die "cannot create the bucket on moto"

S3_ENV=(AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true
  AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent)
S3_FLAGS=(--s3-endpoint "http://127.0.0.1:$MOTO_PORT" --s3-force-path-style --s3-region us-east-1)

TIMES=$RES/times.tsv
REQS=$RES/requests.tsv
printf 'command\trepo\tround\twall_s\tuser_s\tsys_s\tmaxrss_kib\tload1\n' >"$TIMES"
printf 'command\tround\tkind\tcount\n' >"$REQS"

pgark_as_pg() { # REPO ARGS...: pgark as postgres on REPO (local path or round prefix)
  local repo=$1
  shift
  case $repo in
    s3://*) runuser -u postgres -- env "${S3_ENV[@]}" PGHOST="$WORK" PGPORT="$PORT" "$BIN" --repo "$repo" "${S3_FLAGS[@]}" "$@" ;;
    *) runuser -u postgres -- env PGHOST="$WORK" PGPORT="$PORT" "$BIN" --repo "$repo" "$@" ;;
  esac
}

# A fresh cluster whose WAL starts at log 0x50, and two full backups of it.
cluster_and_backups() { # REPO
  local repo=$1
  [ -f "$WORK/data/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null
  rm -rf "$WORK/data"
  runuser -u postgres -- "$PGBIN/initdb" -k -A trust -D "$WORK/data" >/dev/null
  runuser -u postgres -- "$PGBIN/pg_resetwal" -l 000000010000005000000000 "$WORK/data" >/dev/null
  cat >>"$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
archive_mode = on
archive_command = '/bin/true'
CONF
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start >/dev/null
  for _ in $(seq 1 "$BACKUPS"); do
    pgark_as_pg "$repo" backup-push --archive-timeout 0 "$WORK/data" >/dev/null
    sleep 1.1
  done
}

populate() { # REPO: WAL_OBJECTS segment objects below log 0x50
  "$PY" - "$1" "$WAL_OBJECTS" "$MOTO_PORT" <<'EOF'
import os, sys
from concurrent.futures import ThreadPoolExecutor
repo, n, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def key(i):
    log, seg = divmod(i, 256)
    return f"wal/00000001{log:08X}/00000001{log:08X}{seg:08X}"
keys = [key(i) for i in range(1, n + 1)]
body = b"x" * 64
if repo.startswith("s3://"):
    import boto3
    bucket, prefix = repo[5:].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=f"{prefix}/{k}", Body=body), keys))
else:
    for k in keys:
        path = os.path.join(repo, k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
EOF
  case $1 in s3://*) ;; *) chown -R postgres "$1" ;; esac
}

remaining_wal() { # REPO: WAL objects left below log 0x50
  "$PY" - "$1" "$MOTO_PORT" <<'EOF'
import os, sys
repo, port = sys.argv[1], sys.argv[2]
if repo.startswith("s3://"):
    import boto3
    bucket, prefix = repo[5:].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    keys = [o["Key"][len(prefix) + 1:] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/wal/") for o in page.get("Contents", [])]
else:
    keys = [os.path.relpath(os.path.join(d, f), repo) for d, _, fs in os.walk(os.path.join(repo, "wal")) for f in fs]
print(sum(1 for k in keys if k.split("/")[1][8:16] < "00000050"))
EOF
}

timed() { # COMMAND REPO KIND ROUND ARGS...: one pgark command, timed, its S3 requests counted
  local command=$1 repo=$2 kind=$3 round=$4 load before after
  shift 4
  load=$(cut -d' ' -f1 /proc/loadavg)
  before=$(wc -l <"$RES/moto.log")
  sync
  local envs=() flags=()
  if [ "$kind" = s3 ]; then
    envs=("${S3_ENV[@]}")
    flags=("${S3_FLAGS[@]}")
  fi
  runuser -u postgres -- /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" \
    env "${envs[@]}" PGHOST="$WORK" PGPORT="$PORT" "$BIN" --repo "$repo" "${flags[@]}" "$@" \
    >"$WORK/out.json" 2>"$WORK/err.txt" \
    || { cat "$WORK/err.txt" >&2; die "$command on $kind round $round failed"; }
  read -r wall user sys rss <"$WORK/time.out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$command" "$kind" "$round" "$wall" "$user" "$sys" "$rss" "$load" >>"$TIMES"
  printf '   %-6s %-6s round %s: %6.2f s wall, %6.2f s cpu, %7s KiB, load %s\n' \
    "$command" "$kind" "$round" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$load" >&2
  if [ "$kind" = s3 ]; then
    after=$(wc -l <"$RES/moto.log")
    # (werkzeug colours some lines: the escapes go first)
    sed -n "$((before + 1)),${after}p" "$RES/moto.log" | sed 's/\x1b\[[0-9;]*m//g' | awk -v c="$command" -v r="$round" '
      /"POST [^ ]*\?delete/ {k["DeleteObjects"]++; next}
      /"DELETE / {k["DeleteObject"]++; next}
      /"GET [^ ]*list-type=2/ {k["ListObjectsV2"]++; next}
      /"GET [^ ]*uploads/ {k["ListMultipartUploads"]++; next}
      /"GET / {k["GetObject"]++; next}
      /"PUT / {k["PutObject"]++; next}
      /"HEAD / {k["HeadObject"]++; next}
      /"(POST|GET|PUT|DELETE|HEAD) / {k["other"]++}
      END {for (x in k) printf "%s\t%s\t%s\t%d\n", c, r, x, k[x]}' >>"$REQS"
  fi
}

check_after_delete() { # REPO KIND ROUND
  local repo=$1 kind=$2 round=$3 left listed
  left=$(remaining_wal "$repo")
  [ "$left" = 0 ] || die "$kind round $round: $left WAL objects of the deleted range left"
  listed=$(pgark_as_pg "$repo" backup-list --json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$listed" = 1 ] || die "$kind round $round: $listed backups listed, expected 1"
}

say "$RUNS rounds (S3 and local alternated), $BACKUPS backups and $WAL_OBJECTS WAL objects each"
for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order="s3 local"; else order="local s3"; fi
  for kind in $order; do
    if [ "$kind" = s3 ]; then repo="s3://bench/round$round"; else repo="$WORK/local-repo-$round"; fi
    say "round $round, $kind: cluster, $BACKUPS backups, $WAL_OBJECTS WAL objects"
    cluster_and_backups "$repo"
    populate "$repo"
    timed status "$repo" "$kind" "$round" status --json --no-fail --max-archive-age 1h
    timed delete "$repo" "$kind" "$round" delete --retain-count 1 --confirm --json
    check_after_delete "$repo" "$kind" "$round"
    [ "$kind" = local ] && rm -rf "$repo"
  done
done

python3 - "$TIMES" "$REQS" "$WAL_OBJECTS" "$BACKUPS" >"$RES/summary.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
reqs = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
n, backups = int(sys.argv[3]), int(sys.argv[4])
loads = [float(r["load1"]) for r in rows]
print(f"{backups} backups and {n} WAL objects: status, then delete --retain-count 1 --confirm")
print(f"load average before each command: min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}")
print(f"{'command':<16}{'median s':>10}{'min':>8}{'max':>8}{'cpu s':>8}{'peak RSS KiB':>14}")
for command in ("status", "delete"):
    for kind in ("s3", "local"):
        sel = [r for r in rows if r["command"] == command and r["repo"] == kind]
        w = [float(r["wall_s"]) for r in sel]
        cpu = [float(r["user_s"]) + float(r["sys_s"]) for r in sel]
        rss = max(int(r["maxrss_kib"]) for r in sel)
        print(f"{command + ' ' + kind:<16}{statistics.median(w):>10.2f}{min(w):>8.2f}{max(w):>8.2f}{statistics.median(cpu):>8.2f}{rss:>14}")
print()
print("S3 requests per command (moto's log), by round:")
for command in ("status", "delete"):
    for r in sorted({x["round"] for x in reqs if x["command"] == command}):
        kinds = {x["kind"]: int(x["count"]) for x in reqs if x["round"] == r and x["command"] == command}
        print(f"  {command} round {r}: {sum(kinds.values())} requests: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
EOF
cat "$RES/summary.txt"
