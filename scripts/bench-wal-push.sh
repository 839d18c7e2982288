#!/usr/bin/env bash
# wal-push of one real 16 MiB WAL segment, whole command, pgark vs
# pgBackRest's archive-push, timed in ONE hyperfine run (only ratios measured
# in the same run are compared; the machine is shared and noisy).
#
#   scripts/bench-wal-push.sh     # as root, from any directory
#
# What it does:
#   1. ../shared/bench/peers.sh sets up a pgbench cluster (scale $SCALE) in
#      $BENCH_DIR, running as `postgres`, and a pgBackRest stanza `bench`
#      (pgBackRest is installed from Debian's packages if missing).
#   2. pgbench writes WAL until one segment of THAT cluster is completely
#      written and archived (archive_status/*.done); it is copied to
#      $BENCH_DIR/seg/. pgBackRest refuses WAL of another cluster, so the
#      committed fixtures cannot be used here.
#   3. `cargo build --release`; the binary is copied to $BENCH_DIR/bin (root's
#      home is not readable by postgres).
#   4. One push per codec per tool, to check that both succeed and to record
#      the stored object sizes.
#   5. One hyperfine invocation, as postgres: per codec, pgark wal-push vs
#      pgbackrest archive-push (synchronous, no archive-async). --prepare
#      deletes the object pushed before (both repositories) and runs `sync`,
#      so every timed run really compresses, checksums and durably stores the
#      segment. Results: $BENCH_DIR/results/hyperfine.{md,json}, sizes.tsv,
#      summary.txt.
#   6. Prints pgBackRest time / pgark time per codec and the stored sizes.
#   The cluster is stopped on exit, failure included.
#
# Environment: BENCH_DIR (default /tmp/pgark-bench-wal-push; wiped and
# recreated: it must be absent or made by this script), PORT (54329),
# SCALE (1), RUNS (50), WARMUP (3), PEERS (../shared/bench/peers.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-wal-push}
PORT=${PORT:-54329}
SCALE=${SCALE:-1}
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-3}
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
MARKER=.pgark-bench-wal-push
SEG_BYTES=$((16 * 1024 * 1024))

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-wal-push: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as postgres via runuser)"
[ -r "$PEERS" ] || die "$PEERS not found (set PEERS)"
id postgres >/dev/null 2>&1 || die "no postgres user: install Debian's postgresql package"
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PGBIN/pg_ctl" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
export PGBIN

as_pg() { runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; }
psql_q() { as_pg psql -h "$BENCH_DIR" -p "$PORT" -qAt -v ON_ERROR_STOP=1 -c "$1" postgres; }

need_deb() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  say "installing $2 (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_deb hyperfine hyperfine
need_deb jq jq

# --- a fresh bench dir ------------------------------------------------------
if [ -e "$BENCH_DIR" ]; then
  [ -e "$BENCH_DIR/$MARKER" ] || die "$BENCH_DIR exists and was not made by this script; remove it or set BENCH_DIR"
  if [ -e "$BENCH_DIR/pgdata/postmaster.pid" ]; then
    bash "$PEERS" stop "$BENCH_DIR" || true
  fi
  rm -rf "$BENCH_DIR"
fi
mkdir -p "$BENCH_DIR"
touch "$BENCH_DIR/$MARKER"

cleanup() {
  local rc=$?
  if [ -e "$BENCH_DIR/pgdata/postmaster.pid" ]; then
    say "stopping the cluster"
    bash "$PEERS" stop "$BENCH_DIR" || echo "bench-wal-push: could not stop the cluster in $BENCH_DIR" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "bench-wal-push: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# --- cluster and pgBackRest stanza -------------------------------------------
say "cluster: scale $SCALE on port $PORT in $BENCH_DIR"
bash "$PEERS" setup "$BENCH_DIR" "$PORT" "$SCALE"
say "pgBackRest stanza bench and one full backup"
bash "$PEERS" pgbackrest-full "$BENCH_DIR" "$PORT" zst
PGBR_CONF=$BENCH_DIR/pgbackrest.conf
PGBR_VERSION=$(pgbackrest version)

# --- one completed segment of this cluster ------------------------------------
# pgbench writes WAL until the segment after the current one is entirely
# written; a switch then closes the one after it, and the archiver (/bin/true)
# marks the chosen segment .done: PostgreSQL considers it complete.
say "generating WAL with pgbench"
start_lsn=$(psql_q "select pg_current_wal_lsn()")
SEG=$(psql_q "select pg_walfile_name('$start_lsn'::pg_lsn + $SEG_BYTES)")
for _ in $(seq 1 200); do
  done_bytes=$(psql_q "select pg_current_wal_lsn() - '$start_lsn'::pg_lsn")
  [ "${done_bytes%.*}" -gt $((2 * SEG_BYTES + 65536)) ] && break
  PGOPTIONS='-c synchronous_commit=off' \
    as_pg pgbench -h "$BENCH_DIR" -p "$PORT" -n -c 2 -j 2 -t 2000 postgres >>"$BENCH_DIR/pgbench-run.log" 2>&1
done
[ "${done_bytes%.*}" -gt $((2 * SEG_BYTES)) ] || die "pgbench did not write 32 MiB of WAL"
psql_q "select pg_switch_wal()" >/dev/null
for _ in $(seq 1 60); do
  [ -e "$BENCH_DIR/pgdata/pg_wal/archive_status/$SEG.done" ] && break
  sleep 0.5
done
[ -e "$BENCH_DIR/pgdata/pg_wal/archive_status/$SEG.done" ] || die "segment $SEG was not archived (.done) in time"
mkdir -p "$BENCH_DIR/seg" "$BENCH_DIR/bin" "$BENCH_DIR/results" "$BENCH_DIR/pgark-repo" "$BENCH_DIR/check"
cp "$BENCH_DIR/pgdata/pg_wal/$SEG" "$BENCH_DIR/seg/$SEG"
SEG_PATH=$BENCH_DIR/seg/$SEG
[ "$(stat -c %s "$SEG_PATH")" = "$SEG_BYTES" ] || die "$SEG_PATH is not 16 MiB"
records=$("$PGBIN/pg_waldump" -p "$BENCH_DIR/seg" "$SEG" 2>/dev/null | wc -l || true)
[ "$records" -gt 1000 ] || die "pg_waldump reads only $records records in $SEG"
say "segment $SEG: $records WAL records"

# --- pgark --------------------------------------------------------------------
say "cargo build --release"
cargo build --release
install -m 0755 "$ROOT/target/release/pgark" "$BENCH_DIR/bin/pgark"
PGARK=$BENCH_DIR/bin/pgark
PGARK_REPO=$BENCH_DIR/pgark-repo
PGARK_VERSION=$("$PGARK" --version)
chown -R postgres "$BENCH_DIR/seg" "$BENCH_DIR/results" "$PGARK_REPO" "$BENCH_DIR/check"

# Objects: pgark's at REPO/wal/<timeline+log>/<segment>; pgBackRest's at
# repo/archive/bench/<version-id>/<timeline+log>/<segment>-<sha1>.<ext>.
PGARK_OBJ=$PGARK_REPO/wal/${SEG:0:16}/$SEG
PGBR_GLOB="$BENCH_DIR/pgbackrest-repo/archive/bench/*/${SEG:0:16}/$SEG-*"
PREPARE="rm -f $PGARK_OBJ $PGBR_GLOB && sync"
# hyperfine runs without a shell (-N: no shell start-up in the timings), so
# the prepare step (a glob) is a script.
PREPARE_SH=$BENCH_DIR/bin/prepare.sh
printf '#!/bin/sh\n%s\n' "$PREPARE" >"$PREPARE_SH"
chmod 0755 "$PREPARE_SH"

# codec label | pgark command | pgBackRest command
CODECS=(zstd lz4 none)
pgark_cmd() {
  case $1 in
    zstd) echo "$PGARK wal-push --repo $PGARK_REPO --compression zstd --compression-level 3 $SEG_PATH" ;;
    lz4) echo "$PGARK wal-push --repo $PGARK_REPO --compression lz4 $SEG_PATH" ;;
    none) echo "$PGARK wal-push --repo $PGARK_REPO --compression none $SEG_PATH" ;;
  esac
}
pgbr_cmd() {
  local base="pgbackrest --config=$PGBR_CONF --stanza=bench"
  case $1 in
    zstd) echo "$base --compress-type=zst --compress-level=3 archive-push $SEG_PATH" ;;
    lz4) echo "$base --compress-type=lz4 --compress-level=1 archive-push $SEG_PATH" ;;
    none) echo "$base --compress-type=none archive-push $SEG_PATH" ;;
  esac
}

# --- one checked push per codec: both succeed, sizes recorded ------------------
say "checking one push per codec and recording stored sizes"
printf 'codec\tsegment_bytes\tpgark_bytes\tpgbackrest_bytes\tpgbackrest_object\n' >"$BENCH_DIR/results/sizes.tsv"
for c in "${CODECS[@]}"; do
  as_pg sh -c "$PREPARE"
  as_pg sh -c "$(pgark_cmd "$c")"
  as_pg sh -c "$(pgbr_cmd "$c")"
  [ -f "$PGARK_OBJ" ] || die "pgark ($c) stored nothing at $PGARK_OBJ"
  # shellcheck disable=SC2086
  pgbr_obj=$(ls $PGBR_GLOB 2>/dev/null | head -n1)
  [ -n "$pgbr_obj" ] || die "pgBackRest ($c) stored nothing at $PGBR_GLOB"
  # The object pgark stored must come back bit for bit.
  rm -f "$BENCH_DIR/check/$SEG"
  as_pg "$PGARK" wal-fetch --repo "$PGARK_REPO" "$SEG" "$BENCH_DIR/check/$SEG"
  cmp -s "$SEG_PATH" "$BENCH_DIR/check/$SEG" || die "pgark ($c): wal-fetch returned different bytes"
  printf '%s\t%s\t%s\t%s\t%s\n' "$c" "$SEG_BYTES" "$(stat -c %s "$PGARK_OBJ")" \
    "$(stat -c %s "$pgbr_obj")" "${pgbr_obj#"$BENCH_DIR"/}" >>"$BENCH_DIR/results/sizes.tsv"
done
rm -f "$BENCH_DIR/check/$SEG"
as_pg sh -c "$PREPARE"

# --- one hyperfine run, both tools, every codec -------------------------------
args=()
for c in "${CODECS[@]}"; do
  args+=(-n "pgark $c" "$(pgark_cmd "$c")" -n "pgbackrest $c" "$(pgbr_cmd "$c")")
done
say "hyperfine: $RUNS runs, $WARMUP warmup, per command"
cd "$BENCH_DIR/results"
as_pg hyperfine --style basic -N --runs "$RUNS" --warmup "$WARMUP" --prepare "sh $PREPARE_SH" \
  --export-json hyperfine.json --export-markdown hyperfine.md "${args[@]}"

# --- summary ------------------------------------------------------------------
{
  echo "segment: $SEG (16 MiB, this cluster's WAL)"
  dirty=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -c1)
  echo "pgark: $PGARK_VERSION (commit $(git -C "$ROOT" rev-parse --short HEAD)${dirty:+, work tree with uncommitted changes})"
  echo "pgBackRest: $PGBR_VERSION"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "times in ms over $RUNS runs (+$WARMUP warmup) per command; cpu = user + system"
  printf '%-5s | %-15s %7s %6s | %-15s %7s %6s | %5s %5s | %10s %12s\n' \
    codec "pgark mean" median cpu "pgbackrest mean" median cpu ratio r.med "pgark B" "pgbackrest B"
  for c in "${CODECS[@]}"; do
    read -r a_mean a_sd a_med a_cpu b_mean b_sd b_med b_cpu < <(jq -r --arg a "pgark $c" --arg b "pgbackrest $c" '
      def row($n): .results[] | select(.command == $n) | [.mean, .stddev, .median, .user + .system];
      [row($a), row($b)] | flatten | map(. * 1000) | @tsv' hyperfine.json)
    read -r _ _ a_size b_size _ < <(awk -F'\t' -v c="$c" '$1 == c' sizes.tsv)
    awk -v c="$c" -v am="$a_mean" -v as="$a_sd" -v amd="$a_med" -v ac="$a_cpu" \
      -v bm="$b_mean" -v bs="$b_sd" -v bmd="$b_med" -v bc="$b_cpu" -v asz="$a_size" -v bsz="$b_size" 'BEGIN {
      printf "%-5s | %7.1f ± %5.1f %7.1f %6.1f | %7.1f ± %5.1f %7.1f %6.1f | %5.2f %5.2f | %10d %12d\n",
        c, am, as, amd, ac, bm, bs, bmd, bc, bm / am, bmd / amd, asz, bsz }'
  done
  echo
  echo "ratio = pgBackRest mean / pgark mean, r.med = the same for medians; both from this one hyperfine run (> 1: pgark faster)"
} | tee summary.txt
say "results in $BENCH_DIR/results (hyperfine.md, hyperfine.json, sizes.tsv, summary.txt)"
