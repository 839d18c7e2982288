#!/usr/bin/env bash
# Delta (page-level incremental) backup benchmark: `pgark backup-push --delta`
# and `pgark backup-fetch` of a delta side by side with pgBackRest's
# incremental backup and restore, on a pgbench cluster in which about 1% of
# the pages changed since the full backup. Tools alternate round by round
# (pgark first in odd rounds, pgBackRest first in even ones), so that load
# from other work on the machine falls on both alike. Only ratios measured in
# the same run are compared.
#
#   scripts/bench-delta.sh       # as root, from any directory
#
# What it does:
#   1. cargo build --release of the committed HEAD (exported with git
#      archive, built in target/bench-backup, the target directory
#      scripts/bench-backup.sh uses, so both share one incremental build), or
#      of the work tree as it is with BUILD=worktree (target/release); the
#      binary is copied to $BENCH_DIR/bin (root's home is not readable by
#      postgres). The binary must have `backup-push --delta`; without
#      `backup-fetch --delta`, step 6 below is skipped for pgark (said so).
#   2. peers.sh setup: initdb -k (data checksums), pgbench -i -s $SCALE
#      (about 1.5 GB at 100), archive_command=/bin/true. Neither tool waits
#      for the WAL archive: pgark runs with --archive-timeout 0, pgBackRest
#      with peers.sh's archive-check=n. pgark runs as postgres with
#      PGHOST/PGPORT pointing at the cluster's socket. Warm-up and checks,
#      untimed: peers.sh pgbackrest-full (writes $BENCH_DIR/main/
#      pgbackrest.conf: stanza bench, process-max = CPUs, start-fast=y), one
#      pgark full backup-push and one backup-push --delta, which must come out
#      as a delta (backup-list --detail: type delta).
#   3. $RUNS rounds; every round starts from empty repositories (pgark's
#      deleted, pgBackRest's deleted and stanza-create'd), then:
#        full:     pgark backup-push PGDATA --repo R --archive-timeout 0
#                  pgbackrest backup --type=full --compress-type=zst --compress-level=3
#        change:   pgbench -n -c 2 -t $CHANGE_TX/2 (untimed; $CHANGE_TX
#                  transactions in all, default 12 x SCALE), then CHECKPOINT.
#                  Each transaction updates one random pgbench_accounts row
#                  (its old heap page and an index leaf page; the new versions
#                  go to a few pages at the end of the table), a teller and a
#                  branch, and inserts a history row: about 2 pages per
#                  transaction, so 12 x SCALE transactions change about 1% of
#                  the main-fork pages (measured and printed every round).
#        reference (untimed): every page of every main-fork relation file
#                  under base/ and global/ (names ^[0-9]+(\.[0-9]+)?$) whose
#                  pd_lsn >= the start LSN of pgark's full backup (backup-list
#                  --json "start_lsn"), concatenated and compressed with
#                  zstd -3 -T1: "changed pages" and "their zstd-3 size", the
#                  least a page-level delta can store.
#        delta:    pgark backup-push --delta PGDATA --repo R --archive-timeout 0
#                  (checked: a delta whose parent is the round's full)
#                  pgbackrest backup --type=incr --compress-type=zst --compress-level=3
#        stored sizes: pgark = the files under R/backups/<delta name>/
#                  (parts and manifest); pgBackRest = its incr backup's
#                  directory, pgbackrest-repo/backup/bench/<label>I/.
#        restore:  of the delta / incr backup into an empty 0700 directory
#                  (extra information: pgark restores a chain, full + delta):
#                  pgark backup-fetch DEST <delta name> --repo R --no-recovery
#                  pgbackrest restore --pg1-path=DEST2 (the latest: the incr)
#        delta restore, of the same backup onto the directory just restored
#                  (unchanged, so the tools only have to find that out):
#                  pgark backup-fetch --delta DEST <delta name> --repo R --no-recovery
#                  pgbackrest restore --delta --pg1-path=DEST2
#                  Both directories were just written, so they are in the page
#                  cache alike; caches are never dropped (a shared machine).
#      Every timed command runs as postgres under /usr/bin/time after a
#      `sync`; the 1-minute load average is recorded before each.
#   4. Prints the summary: medians over the rounds, ratios against the goals
#      (stored sizes per round, then their median), load average. Results in
#      $BENCH_DIR/results: summary.txt, times.tsv (every timed command),
#      sizes.tsv (per round: pages, reference and stored sizes), logs/.
#   The cluster is stopped on exit, failures included; the restored
#   directories are deleted, the repositories of the last round kept.
#
# Reading the results. Goals (each on the medians; "met" or "MISSED"):
#   stored: pgark delta / zstd-3 of the changed pages      <= 1.5
#   stored: pgBackRest incr / pgark delta                  >= 10
#   time:   pgark delta push / pgark full push             <= 0.30
#   time:   pgBackRest restore --delta / pgark backup-fetch --delta >= 2
# pgBackRest 2.45 (Debian's) increments whole files: any changed page brings
# its whole 1 GiB segment back, which is what the 10x goal is about. Ratios
# are also given "paired" (the median of the per-round ratios), which is less
# sensitive to load that hit one round. With RUNS=1 every median is the one
# round's value. "changed pages" counts main-fork pages only: pgark's delta
# also holds the small non-relation files (pg_xact, the free space and
# visibility maps...) whole, hence the 1.5x margin.
#
# Environment: BENCH_DIR (default /tmp/pgark-bench-delta; wiped and
# recreated: it must be absent or made by this script), PORT (54341), SCALE
# (100), RUNS (3), CHANGE_TX (12 x SCALE: pgbench transactions of the change
# step, two clients), BUILD (head; or worktree), PEERS (../shared/bench/peers.sh).
# Disk: about 5 x the cluster's size (cluster, two restores, repositories).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-delta}
PORT=${PORT:-54341}
SCALE=${SCALE:-100}
RUNS=${RUNS:-3}
CHANGE_TX=${CHANGE_TX:-$((12 * SCALE))}
BUILD=${BUILD:-head}
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
MARKER=.pgark-bench-delta
NCPU=$(nproc)

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-delta: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as postgres via runuser)"
[ -r "$PEERS" ] || die "$PEERS not found (set PEERS)"
[ "$RUNS" -ge 1 ] || die "RUNS must be at least 1"
[ "$CHANGE_TX" -ge 2 ] || die "CHANGE_TX must be at least 2"
case $BUILD in head | worktree) ;; *) die "BUILD must be head or worktree" ;; esac
id postgres >/dev/null 2>&1 || die "no postgres user: install Debian's postgresql package"
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PGBIN/pg_ctl" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
export PGBIN
command -v python3 >/dev/null || die "python3 is needed for the page walk"

as_pg() { runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; }

need_deb() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  say "installing $2 (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_deb jq jq
need_deb zstd zstd
[ -x /usr/bin/time ] || need_deb /usr/bin/time time

# --- a fresh bench dir ------------------------------------------------------
stop_cluster() { # DIR
  [ -e "$1/pgdata/postmaster.pid" ] || return 0
  bash "$PEERS" stop "$1" || echo "bench-delta: could not stop the cluster in $1" >&2
}
if [ -e "$BENCH_DIR" ]; then
  [ -e "$BENCH_DIR/$MARKER" ] || die "$BENCH_DIR exists and was not made by this script; remove it or set BENCH_DIR"
  stop_cluster "$BENCH_DIR/main"
  rm -rf "$BENCH_DIR"
fi
mkdir -p "$BENCH_DIR"
touch "$BENCH_DIR/$MARKER"

BIN=$BENCH_DIR/bin
WORK=$BENCH_DIR/work # owned by postgres: repositories and restores
RES=$BENCH_DIR/results
LOGS=$RES/logs
REPO=$WORK/pgark-repo
D_PGARK=$WORK/restore-pgark
D_PGBR=$WORK/restore-pgbackrest

cleanup() {
  local rc=$?
  if [ -e "$BENCH_DIR/main/pgdata/postmaster.pid" ]; then
    say "stopping the cluster"
    stop_cluster "$BENCH_DIR/main"
  fi
  rm -rf "$D_PGARK" "$D_PGBR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "bench-delta: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

mkdir -p "$BIN" "$WORK" "$RES" "$LOGS"
chown postgres "$WORK" "$RES" "$LOGS"

# --- pgark --------------------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if [ "$BUILD" = head ]; then
  # The committed tree, so the figures belong to one commit whatever is
  # being edited in the work tree; the target directory of bench-backup.sh.
  say "cargo build --release of commit $COMMIT (exported to $BENCH_DIR/src)"
  mkdir -p "$BENCH_DIR/src"
  git -C "$ROOT" archive --format=tar HEAD | tar -x -C "$BENCH_DIR/src"
  CARGO_TARGET_DIR=$ROOT/target/bench-backup cargo build --release --locked \
    --manifest-path "$BENCH_DIR/src/Cargo.toml" --bin pgark
  install -m 0755 "$ROOT/target/bench-backup/release/pgark" "$BIN/pgark"
  rm -rf "$BENCH_DIR/src"
  DIRTY=
else
  say "cargo build --release of the work tree"
  cargo build --release --bin pgark
  install -m 0755 "$ROOT/target/release/pgark" "$BIN/pgark"
  DIRTY=$(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -c1)
fi
PGARK=$BIN/pgark
PGARK_VERSION=$("$PGARK" --version)
"$PGARK" backup-push --help | grep -q -- '--delta' ||
  die "this pgark ($BUILD, commit $COMMIT) has no backup-push --delta (BUILD=worktree builds the work tree)"
FETCH_DELTA=0
"$PGARK" backup-fetch --help | grep -q -- '--delta' && FETCH_DELTA=1
SKIP_FETCH_DELTA="skipped: this pgark has no backup-fetch --delta"
[ "$FETCH_DELTA" = 1 ] || say "$SKIP_FETCH_DELTA (pgBackRest's restore --delta is still timed)"

# --- timing -------------------------------------------------------------------
# times.tsv: phase, label, round, wall s, user s, sys s, peak RSS KiB (GNU
# time; the largest single process for multi-process tools), 1-minute load
# average before the command.
TIMES=$RES/times.tsv
printf 'phase\tlabel\tround\twall_s\tuser_s\tsys_s\tmaxrss_kib\tload1\n' >"$TIMES"

load1() { cut -d' ' -f1 /proc/loadavg; }

# timed PHASE LABEL ROUND CMD...: runs CMD as postgres under /usr/bin/time.
timed() {
  local phase=$1 label=$2 round=$3
  shift 3
  local out="$RES/.time" log="$LOGS/$phase-${label// /_}-$round.log" load
  sync
  load=$(load1)
  rm -f "$out"
  if ! as_pg /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "$label $phase (round $round) failed; log: $log"
  fi
  read -r e u s m <"$out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$label" "$round" "$e" "$u" "$s" "$m" "$load" >>"$TIMES"
  printf '   %-9s %-11s round %s: %7.2f s wall, %7.2f s cpu, %7d KiB, load %s\n' \
    "$phase" "$label" "$round" "$e" "$(echo "$u $s" | awk '{print $1 + $2}')" "$m" "$load" >&2
}

# stat_of PHASE LABEL FIELD [median|min|max]: over the rounds in times.tsv.
stat_of() {
  local how=${4:-median}
  awk -F'\t' -v p="$1" -v l="$2" -v f="$3" -v how="$how" '
    NR > 1 && $1 == p && $2 == l {
      v = (f == "cpu") ? $5 + $6 : $(f == "wall" ? 4 : f == "rss" ? 7 : 8); a[n++] = v + 0 }
    END {
      if (n == 0) { print "nan"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      if (how == "min") print a[0]; else if (how == "max") print a[n - 1];
      else print (n % 2) ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }' "$TIMES"
}

# paired NUM_PHASE NUM_LABEL DEN_PHASE DEN_LABEL: median over rounds of
# wall(NUM) / wall(DEN), each ratio taken within one round.
paired() {
  awk -F'\t' -v p="$1" -v a="$2" -v q="$3" -v b="$4" '
    NR > 1 && $1 == p && $2 == a { x[$3] = $4 }
    NR > 1 && $1 == q && $2 == b { y[$3] = $4 }
    END {
      for (r in x) if ((r in y) && y[r] > 0) v[n++] = x[r] / y[r]
      if (n == 0) { print "nan"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$TIMES"
}

bytes_under() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# --- sizes --------------------------------------------------------------------
# sizes.tsv, one line per round.
SIZES=$RES/sizes.tsv
printf 'round\tfull_start_lsn\ttotal_pages\tchanged_pages\tchanged_zstd3_bytes\tpgark_delta_bytes\tpgark_delta_pages\tpgark_full_bytes\tpgbr_incr_bytes\tpgbr_full_bytes\n' >"$SIZES"

# col NAME [median|min|max]: over the rounds in sizes.tsv.
col() {
  awk -F'\t' -v c="$1" -v how="${2:-median}" -v OFMT=%.1f '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
    { a[n++] = $k + 0 }
    END {
      if (n == 0 || !k) { print "nan"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      if (how == "min") print a[0]; else if (how == "max") print a[n - 1];
      else print (n % 2) ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }' "$SIZES"
}

# colratio NUM DEN: median over rounds of NUM / DEN (both columns of one round).
colratio() {
  awk -F'\t' -v a="$1" -v b="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) { if ($i == a) x = i; if ($i == b) y = i }; next }
    $y > 0 { v[n++] = $x / $y }
    END {
      if (n == 0) { print "nan"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$SIZES"
}

# The page walk: the main-fork pages changed since an LSN, written to stdout;
# "TOTAL CHANGED" pages to the file given third.
WALK=$BIN/changed-pages.py
cat >"$WALK" <<'EOF'
import os, re, struct, sys

pgdata, lsn, stats = sys.argv[1], sys.argv[2], sys.argv[3]
hi, lo = lsn.split("/")
since = (int(hi, 16) << 32) | int(lo, 16)
BLCKSZ = 8192
name = re.compile(r"^[0-9]+(\.[0-9]+)?$")
out = sys.stdout.buffer
total = changed = 0
for top in ("base", "global"):
    for d, _, files in os.walk(os.path.join(pgdata, top)):
        for f in sorted(files):
            if not name.match(f):
                continue
            try:
                fh = open(os.path.join(d, f), "rb")
            except FileNotFoundError:
                continue
            with fh:
                while True:
                    buf = fh.read(128 * BLCKSZ)
                    n = len(buf) // BLCKSZ
                    for i in range(n):
                        off = i * BLCKSZ
                        xlogid, xrecoff = struct.unpack_from("<II", buf, off)
                        if (xlogid << 32 | xrecoff) >= since:
                            out.write(buf[off:off + BLCKSZ])
                            changed += 1
                    total += n
                    if len(buf) < 128 * BLCKSZ:
                        break
out.flush()
with open(stats, "w") as s:
    s.write(f"{total} {changed}\n")
EOF

# --- commands -----------------------------------------------------------------
MAIN=$BENCH_DIR/main
PGBR="pgbackrest --config=$MAIN/pgbackrest.conf --stanza=bench"
PGBR_OPTS=(--compress-type=zst --compress-level=3)

pgark_push() { # [extra args...]
  timed_args=(env PGHOST="$MAIN" PGPORT="$PORT" "$PGARK" backup-push "$MAIN/pgdata" --repo "$REPO" --archive-timeout 0 "$@")
}
pgbr_push_prep() { # an empty repository with the stanza, as peers.sh makes it
  rm -rf "$MAIN/pgbackrest-repo"
  mkdir -p "$MAIN/pgbackrest-repo"
  chown postgres "$MAIN/pgbackrest-repo"
  # shellcheck disable=SC2086
  as_pg $PGBR stanza-create >/dev/null
}
empty_dir() { # DEST: a fresh empty 0700 directory owned by postgres
  rm -rf "$1"
  mkdir -m 0700 "$1"
  chown postgres "$1"
}
# pgark's backups, oldest first: "name start_lsn type parent" lines.
pgark_list() {
  as_pg "$PGARK" backup-list --repo "$REPO" --json --detail |
    jq -r '.[] | "\(.name) \(.start_lsn) \(.type) \(.parent // "-")"'
}
psql_pg() { as_pg psql -h "$MAIN" -p "$PORT" -qAtX -c "$1" postgres; }

# order ROUND: the tools in this round's order.
order() { if [ $(($1 % 2)) = 1 ]; then echo pgark pgbackrest; else echo pgbackrest pgark; fi; }

# ==============================================================================
# 1. the cluster, warm-up and checks
# ==============================================================================
say "cluster: scale $SCALE on port $PORT"
bash "$PEERS" setup "$MAIN" "$PORT" "$SCALE" >&2
say "warm-up and checks: peers.sh pgbackrest-full, pgark backup-push, backup-push --delta"
bash "$PEERS" pgbackrest-full "$MAIN" "$PORT" zst
PGBR_VERSION=$(pgbackrest version)
rm -rf "$REPO"
pgark_push
as_pg "${timed_args[@]}" >"$LOGS/check-push.log" 2>&1 || { cat "$LOGS/check-push.log" >&2; die "pgark backup-push failed"; }
pgark_push --delta
as_pg "${timed_args[@]}" >"$LOGS/check-delta.log" 2>&1 || { cat "$LOGS/check-delta.log" >&2; die "pgark backup-push --delta failed"; }
read -r _ _ t _ < <(pgark_list | tail -n1)
[ "$t" = delta ] || { cat "$LOGS/check-delta.log" >&2; die "pgark backup-push --delta took a $t backup"; }

# ==============================================================================
# 2. the rounds
# ==============================================================================
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for r in $(seq 1 "$RUNS"); do
  say "round $r of $RUNS: $(order "$r")"
  rm -rf "$REPO"
  pgbr_push_prep
  for tool in $(order "$r"); do
    if [ "$tool" = pgark ]; then
      pgark_push
      timed full pgark "$r" "${timed_args[@]}"
    else
      # shellcheck disable=SC2086
      timed full pgbackrest "$r" $PGBR backup --type=full "${PGBR_OPTS[@]}"
    fi
  done
  read -r FULL FULL_LSN t _ < <(pgark_list | tail -n1)
  [ "$t" = full ] || die "pgark's first backup of round $r is a $t backup"
  PGBR_FULL=$(ls -d "$MAIN"/pgbackrest-repo/backup/bench/*F | tail -n1)

  # change about 1% of the pages
  as_pg pgbench -h "$MAIN" -p "$PORT" -n -c 2 -t $((CHANGE_TX / 2)) postgres >"$LOGS/pgbench-$r.log" 2>&1 ||
    { cat "$LOGS/pgbench-$r.log" >&2; die "pgbench failed"; }
  psql_pg checkpoint

  # the reference: the changed pages, compressed
  ZREF=$(python3 "$WALK" "$MAIN/pgdata" "$FULL_LSN" "$RES/.walk" | zstd -3 -T1 -q -c | wc -c)
  read -r TOTAL_PAGES CHANGED <"$RES/.walk"
  say "round $r: $CHANGED of $TOTAL_PAGES main-fork pages changed since $FULL_LSN ($(awk -v a="$CHANGED" -v b="$TOTAL_PAGES" 'BEGIN { printf "%.2f", 100 * a / b }')%), $ZREF bytes with zstd -3"

  for tool in $(order "$r"); do
    if [ "$tool" = pgark ]; then
      pgark_push --delta
      timed delta pgark "$r" "${timed_args[@]}"
    else
      # shellcheck disable=SC2086
      timed delta pgbackrest "$r" $PGBR backup --type=incr "${PGBR_OPTS[@]}"
    fi
  done
  read -r DELTA _ t parent < <(pgark_list | tail -n1)
  [ "$t" = delta ] && [ "$parent" = "$FULL" ] || die "pgark backup-push --delta took a $t backup (parent $parent), not a delta of $FULL"
  PGBR_INCR=$(ls -d "$MAIN"/pgbackrest-repo/backup/bench/*I | tail -n1)
  DELTA_PAGES=$(zstd -dc "$REPO/backups/$DELTA/manifest" | jq '[.files[] | .delta.stored_pages // 0] | add // 0')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$FULL_LSN" "$TOTAL_PAGES" "$CHANGED" "$ZREF" \
    "$(bytes_under "$REPO/backups/$DELTA")" "$DELTA_PAGES" "$(bytes_under "$REPO/backups/$FULL")" \
    "$(bytes_under "$PGBR_INCR")" "$(bytes_under "$PGBR_FULL")" >>"$SIZES"

  # restore of the delta / incr into empty directories
  empty_dir "$D_PGARK"
  empty_dir "$D_PGBR"
  for tool in $(order "$r"); do
    if [ "$tool" = pgark ]; then
      timed restore pgark "$r" "$PGARK" backup-fetch "$D_PGARK" "$DELTA" --repo "$REPO" --no-recovery
    else
      # shellcheck disable=SC2086
      timed restore pgbackrest "$r" $PGBR --pg1-path="$D_PGBR" restore
    fi
  done
  # delta restore of the same backup onto those restores
  for tool in $(order "$r"); do
    if [ "$tool" = pgark ]; then
      if [ "$FETCH_DELTA" = 1 ]; then
        timed drestore pgark "$r" "$PGARK" backup-fetch --delta "$D_PGARK" "$DELTA" --repo "$REPO" --no-recovery
      else
        say "round $r: pgark backup-fetch --delta $SKIP_FETCH_DELTA"
      fi
    else
      # shellcheck disable=SC2086
      timed drestore pgbackrest "$r" $PGBR --pg1-path="$D_PGBR" restore --delta
    fi
  done
  rm -rf "$D_PGARK" "$D_PGBR"
done
T_END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ==============================================================================
# 3. summary
# ==============================================================================
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
verdict() { # VALUE OP GOAL
  awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
    if (v == "nan") { print "n/a"; exit }
    ok = (op == ">=") ? v >= g : (op == "<=") ? v <= g : (op == ">") ? v > g : 0
    print ok ? "met" : "MISSED" }'
}
row() { # PHASE LABEL NAME
  printf '%-36s %8.2f %8.2f %8.2f %8.2f %10d\n' "$3" \
    "$(stat_of "$1" "$2" wall)" "$(stat_of "$1" "$2" wall min)" "$(stat_of "$1" "$2" wall max)" \
    "$(stat_of "$1" "$2" cpu)" "$(stat_of "$1" "$2" rss max)"
}
# tgoal TEXT NUM_PHASE NUM_LABEL DEN_PHASE DEN_LABEL [OP GOAL]: wall-time ratio.
tgoal() {
  local med pr cpu
  med=$(ratio "$(stat_of "$2" "$3" wall)" "$(stat_of "$4" "$5" wall)")
  pr=$(paired "$2" "$3" "$4" "$5")
  cpu=$(ratio "$(stat_of "$2" "$3" cpu)" "$(stat_of "$4" "$5" cpu)")
  if [ $# -ge 7 ]; then
    printf '%-44s %8s %8.3f %8s   %-8s %s\n' "$1" "$med" "$pr" "$cpu" "$6 $7" "$(verdict "$med" "$6" "$7")"
  else
    printf '%-44s %8s %8.3f %8s   %-8s %s\n' "$1" "$med" "$pr" "$cpu" "-" "(information)"
  fi
}
# sgoal TEXT NUM_COL DEN_COL OP GOAL: stored-size ratio.
sgoal() {
  local med pr
  med=$(ratio "$(col "$2")" "$(col "$3")")
  pr=$(colratio "$2" "$3")
  printf '%-44s %8s %8.3f %8s   %-8s %s\n' "$1" "$med" "$pr" "-" "$4 $5" "$(verdict "$med" "$4" "$5")"
}
load_stats() {
  awk -F'\t' 'NR > 1 { a[n++] = $8 + 0 }
    END { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      printf "min %.2f, median %.2f, max %.2f", a[0], (n % 2) ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2, a[n - 1] }' "$TIMES"
}

{
  echo "pgark: $PGARK_VERSION (commit $COMMIT${DIRTY:+, work tree with uncommitted changes}), release build"
  echo "pgBackRest: $PGBR_VERSION; $(zstd --version | head -n1)"
  echo "machine: $NCPU CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r)"
  echo "runs: $T_START to $T_END; $RUNS round(s), tools alternated (pgark first in odd rounds)$([ "$RUNS" = 1 ] && echo '; ONE round: every median is that round')"
  echo "load average (1 min) before each timed command: $(load_stats); 1/5/15 min before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo "cluster: pgbench scale $SCALE, initdb -k; change step: pgbench -n -c 2 -t $((CHANGE_TX / 2)) ($CHANGE_TX transactions) + CHECKPOINT"
  echo
  echo "pages (median over rounds; main forks under base/ and global/):"
  printf '  all pages %.0f (%.1f MiB), changed since the full backup started %.0f (%.2f%%, min %.0f, max %.0f)\n' \
    "$(col total_pages)" "$(awk -v p="$(col total_pages)" 'BEGIN { print p * 8192 / 1048576 }')" \
    "$(col changed_pages)" "$(awk -v a="$(col changed_pages)" -v b="$(col total_pages)" 'BEGIN { print 100 * a / b }')" \
    "$(col changed_pages min)" "$(col changed_pages max)"
  printf '  pages stored by pgark'"'"'s delta (its manifest): %.0f\n' "$(col pgark_delta_pages)"
  echo
  echo "stored sizes (bytes, median over rounds)"
  printf '  %-44s %12.0f  (%s MiB)\n' "changed pages, zstd -3 (the reference)" "$(col changed_zstd3_bytes)" "$(mib "$(col changed_zstd3_bytes)")"
  printf '  %-44s %12.0f  (%s MiB)\n' "pgark delta backup" "$(col pgark_delta_bytes)" "$(mib "$(col pgark_delta_bytes)")"
  printf '  %-44s %12.0f  (%s MiB)\n' "pgBackRest incr backup" "$(col pgbr_incr_bytes)" "$(mib "$(col pgbr_incr_bytes)")"
  printf '  %-44s %12.0f  (%s MiB)\n' "pgark full backup" "$(col pgark_full_bytes)" "$(mib "$(col pgark_full_bytes)")"
  printf '  %-44s %12.0f  (%s MiB)\n' "pgBackRest full backup" "$(col pgbr_full_bytes)" "$(mib "$(col pgbr_full_bytes)")"
  echo
  echo "times (seconds; cpu = user + sys, median; RSS = largest single process, KiB, max over rounds)"
  printf '%-36s %8s %8s %8s %8s %10s\n' command median min max cpu "peak RSS"
  row full pgark "pgark backup-push (full)"
  row full pgbackrest "pgBackRest backup --type=full"
  row delta pgark "pgark backup-push --delta"
  row delta pgbackrest "pgBackRest backup --type=incr"
  row restore pgark "pgark backup-fetch of the delta"
  row restore pgbackrest "pgBackRest restore of the incr"
  if [ "$FETCH_DELTA" = 1 ]; then
    row drestore pgark "pgark backup-fetch --delta (same)"
  else
    printf '%-36s %s\n' "pgark backup-fetch --delta (same)" "$SKIP_FETCH_DELTA"
  fi
  row drestore pgbackrest "pgBackRest restore --delta (same)"
  echo
  echo "ratios: of the medians, and the median of the per-round ratios (paired); cpu: of the median CPU times"
  printf '%-44s %8s %8s %8s   %-8s %s\n' ratio medians paired cpu goal "(on medians)"
  sgoal "stored: pgark delta / zstd-3 changed pages" pgark_delta_bytes changed_zstd3_bytes "<=" 1.5
  sgoal "stored: pgBackRest incr / pgark delta" pgbr_incr_bytes pgark_delta_bytes ">=" 10
  tgoal "time: pgark delta push / pgark full push" delta pgark full pgark "<=" 0.30
  if [ "$FETCH_DELTA" = 1 ]; then
    tgoal "time: pgBackRest / pgark, delta restore" drestore pgbackrest drestore pgark ">=" 2
  else
    printf '%-44s %s\n' "time: pgBackRest / pgark, delta restore" "$SKIP_FETCH_DELTA"
  fi
  tgoal "time: pgBackRest / pgark, full push" full pgbackrest full pgark
  tgoal "time: pgBackRest / pgark, delta/incr push" delta pgbackrest delta pgark
  tgoal "time: pgBackRest / pgark, restore of delta" restore pgbackrest restore pgark
  tgoal "time: pgBackRest incr / full push" delta pgbackrest full pgbackrest
} | tee "$RES/summary.txt"
say "results in $RES (summary.txt, times.tsv, sizes.tsv, logs/)"
