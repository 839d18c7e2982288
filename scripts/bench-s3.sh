#!/usr/bin/env bash
# backup-push and backup-fetch into an S3 repository (moto's server on
# 127.0.0.1) against the same commands into a local-directory repository,
# in ONE run, alternated round by round, so that the ratio measures what the
# S3 path costs (HTTP, multipart upload, the SDK) and not the machine's load.
#
#   scripts/bench-s3.sh        # as root, from the project root
#
# What it does:
#   1. cargo build --release --bin pgark of the work tree (or PGARK=/path to
#      use a built binary), copied to $BENCH_DIR/bin for the postgres user.
#   2. ../shared/bench/peers.sh setup: a pgbench cluster at $SCALE (30: about
#      470 MiB), initdb -k, archive_command /bin/true (so backup-push runs
#      with --archive-timeout 0, as in the other benchmarks).
#   3. moto's S3 server (the one .ci/install-deps.sh installs under
#      /opt/pgark-test/moto) on 127.0.0.1:$MOTO_PORT, bucket `bench`.
#   4. $RUNS rounds of: backup-push into a fresh local directory and into a
#      fresh prefix of the bucket (order alternating by round), then
#      backup-fetch of each into a fresh empty directory. Default settings
#      (zstd 3, one worker per CPU, 64 MiB parts). Every command runs as
#      postgres under /usr/bin/time (wall, CPU, peak RSS of pgark).
#   5. Prints medians, the throughput ratio local time / S3 time (goal: at
#      least 0.8, i.e. S3 within 80 % of local) and peak RSS (goal: 64 MiB).
#      Results in $BENCH_DIR/results/{times.tsv,summary.txt}.
#
# moto keeps objects in its Python process's memory and is not fast; a real
# S3 endpoint has more latency and more bandwidth. The ratio is an upper
# bound on what pgark's S3 path adds on this machine, not a forecast.
#
# Environment: BENCH_DIR (/tmp/pgark-bench-s3, wiped), PORT (54351),
# MOTO_PORT (54352), SCALE (30), RUNS (5), PGARK (build), PEERS
# (../shared/bench/peers.sh), MOTO_SERVER (/opt/pgark-test/moto/bin/moto_server).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-s3}
PORT=${PORT:-54351}
MOTO_PORT=${MOTO_PORT:-54352}
SCALE=${SCALE:-30}
RUNS=${RUNS:-5}
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
MOTO_SERVER=${MOTO_SERVER:-/opt/pgark-test/moto/bin/moto_server}

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-s3: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and pgark run as postgres via runuser)"
[ -r "$PEERS" ] || die "$PEERS not found (set PEERS)"
[ -x "$MOTO_SERVER" ] || die "$MOTO_SERVER not found: run .ci/install-deps.sh (or set MOTO_SERVER)"
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
  bash "$PEERS" stop "$BENCH_DIR/cluster" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ -z "${PGARK:-}" ]; then
  say "cargo build --release --bin pgark (work tree)"
  cargo build --release --bin pgark
  PGARK=$ROOT/target/release/pgark
fi
install -m 0755 "$PGARK" "$BENCH_DIR/bin/pgark"
chmod 755 "$BENCH_DIR" "$BENCH_DIR/bin"
BIN=$BENCH_DIR/bin/pgark
say "$("$BIN" --version)"

say "cluster: pgbench scale $SCALE on port $PORT"
bash "$PEERS" setup "$BENCH_DIR/cluster" "$PORT" "$SCALE" >/dev/null
PGDATA=$BENCH_DIR/cluster/pgdata

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
printf 'phase\trepo\tround\twall_s\tuser_s\tsys_s\tmaxrss_kib\tload1\n' >"$TIMES"

# timed PHASE REPO ROUND -- command...: runs as postgres, appends a row.
timed() {
  local phase=$1 repo=$2 round=$3
  shift 4
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  sync
  runuser -u postgres -- /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.out" "$@" \
    >"$WORK/out.txt" 2>"$WORK/err.txt" || { cat "$WORK/err.txt" >&2; die "$phase $repo round $round failed"; }
  read -r wall user sys rss <"$WORK/time.out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$repo" "$round" "$wall" "$user" "$sys" "$rss" "$load" >>"$TIMES"
  printf '   %-6s %-6s round %s: %6.2f s wall, %6.2f s cpu, %7s KiB, load %s\n' \
    "$phase" "$repo" "$round" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$load" >&2
}

push() { # REPO ROUND
  local round=$2
  if [ "$1" = local ]; then
    rm -rf "$WORK/local-repo"
    timed push local "$round" -- env PGHOST="$BENCH_DIR/cluster" PGPORT="$PORT" \
      "$BIN" --repo "$WORK/local-repo" backup-push --archive-timeout 0 "$PGDATA"
  else
    timed push s3 "$round" -- env "${S3_ENV[@]}" PGHOST="$BENCH_DIR/cluster" PGPORT="$PORT" \
      "$BIN" --repo "s3://bench/round$round" "${S3_FLAGS[@]}" backup-push --archive-timeout 0 "$PGDATA"
  fi
}

fetch() { # REPO ROUND
  local round=$2 dest=$WORK/dest
  rm -rf "$dest"
  if [ "$1" = local ]; then
    timed fetch local "$round" -- "$BIN" --repo "$WORK/local-repo" backup-fetch "$dest" LATEST --no-recovery
  else
    timed fetch s3 "$round" -- env "${S3_ENV[@]}" \
      "$BIN" --repo "s3://bench/round$round" "${S3_FLAGS[@]}" backup-fetch "$dest" LATEST --no-recovery
  fi
  rm -rf "$dest"
}

say "$RUNS rounds (local and S3 alternated)"
for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order="local s3"; else order="s3 local"; fi
  for repo in $order; do push "$repo" "$round"; done
  for repo in $order; do fetch "$repo" "$round"; done
done

STORED_LOCAL=$(du -sb "$WORK/local-repo/backups" | cut -f1)

python3 - "$TIMES" "$SCALE" "$STORED_LOCAL" >"$RES/summary.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
scale, stored = sys.argv[2], int(sys.argv[3])
def col(phase, repo, key):
    return [float(r[key]) for r in rows if r["phase"] == phase and r["repo"] == repo]
def cpu(phase, repo):
    return [float(r["user_s"]) + float(r["sys_s"]) for r in rows if r["phase"] == phase and r["repo"] == repo]
loads = [float(r["load1"]) for r in rows]
print(f"pgbench scale {scale}; local repository after the last push: {stored} bytes stored")
print(f"load average before each command: min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}")
print(f"{'command':<26}{'median s':>10}{'min':>8}{'max':>8}{'cpu s':>8}{'peak RSS KiB':>14}")
for phase in ("push", "fetch"):
    for repo in ("local", "s3"):
        w = col(phase, repo, "wall_s")
        rss = max(int(r["maxrss_kib"]) for r in rows if r["phase"] == phase and r["repo"] == repo)
        print(f"{'backup-' + phase + ' ' + repo:<26}{statistics.median(w):>10.2f}{min(w):>8.2f}{max(w):>8.2f}"
              f"{statistics.median(cpu(phase, repo)):>8.2f}{rss:>14}")
print()
print("throughput ratio, S3 / local (= local time / S3 time); goal >= 0.80")
for phase in ("push", "fetch"):
    loc, s3 = col(phase, "local", "wall_s"), col(phase, "s3", "wall_s")
    paired = statistics.median([a / b for a, b in zip(loc, s3)])
    med = statistics.median(loc) / statistics.median(s3)
    print(f"  backup-{phase:<6} medians {med:.2f}  paired {paired:.2f}  {'met' if med >= 0.8 else 'MISSED'}")
rss = max(int(r["maxrss_kib"]) for r in rows if r["repo"] == "s3")
print(f"peak RSS with S3: {rss} KiB ({rss / 1024:.1f} MiB); goal <= 65536 KiB: {'met' if rss <= 65536 else 'MISSED'}")
EOF
cat "$RES/summary.txt"
