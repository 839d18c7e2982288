#!/usr/bin/env bash
# Whole-backup benchmark: `pgark backup-push` and `pgark backup-fetch` side
# by side with pgBackRest, pg_basebackup and the compression ceiling, on a
# pgbench cluster, timed in ONE run with the tools alternated round by round
# (A B C D A B C D ...), so that load from other work on the machine falls on
# every tool alike. Only ratios measured in the same run are compared.
#
#   scripts/bench-backup.sh       # as root, from the project root
#
# What it does (details in benches/README.md and BENCHMARKS.md):
#   1. cargo build --release of the committed HEAD (exported with git
#      archive, built in target/bench-backup), or of the work tree as it is
#      with BUILD=worktree; the binary is copied to $BENCH_DIR/bin (root's
#      home is not readable by postgres). pgark runs as postgres with
#      PGHOST/PGPORT pointing at the cluster's socket.
#   2. Small scale ($SMALL_SCALE): peers.sh setup, then $RUNS rounds of
#      pgark backup-push / backup-fetch at default settings, for peak RSS
#      (GNU time's "Maximum resident set size" of the pgark process itself);
#      the cluster is stopped afterwards.
#   3. Main scale ($SCALE, about 1.5 GB at 100): peers.sh setup, one checked
#      warm-up of every tool (peers.sh pgbackrest-full exactly as written,
#      pgark backup-push + backup-fetch + pg_verifybackup -n on the restore),
#      then $RUNS rounds of
#        push:  pgark backup-push --archive-timeout 0   (zstd 3, concurrency = CPUs)
#               pgbackrest backup --type=full --compress-type=zst --compress-level=3
#                   (peers.sh's config: process-max = CPUs, archive-check=n, start-fast=y)
#               pg_basebackup -Ft --compress=client-zstd -X none -c fast
#               tar -cf - base | zstd -3 -T<CPUs> > /dev/null   (peers.sh limit: the ceiling)
#      and $RUNS rounds of
#        fetch: pgark backup-fetch DEST LATEST
#               pgbackrest restore --pg1-path=DEST
#      Each timed command is the peers.sh command without its set-up, which
#      runs untimed before it: repositories and destinations of the previous
#      run are deleted (pgBackRest's repository is recreated with
#      stanza-create), DEST is a fresh empty 0700 directory, then `sync`.
#      Every tool runs as postgres under /usr/bin/time; the 1-minute load
#      average is recorded before every timed command.
#   4. Unless ANALYSIS=0: where pgark's time goes. The part layout of its
#      backup (files larger than a part are split into pieces), pgark backup-push with --concurrency
#      1 / default / 4 and --compression-level 1 (alternated, $RUNS rounds),
#      backup-fetch with --concurrency 1 / default, the phases of one push
#      (from --log-level info, time-stamped), peak RSS of a push with
#      --compression none at --concurrency 1 / 2 / 4 (the memory worst case),
#      the time one fetch spends in syncfs(2) (strace), and a perf profile
#      of one push and one fetch grouped by cost (SHA-256, CRC-32C, zstd,
#      memcpy, kernel...) and by thread, when perf works.
#   5. Prints the summary: medians, ratios against the goals, RSS at both
#      scales, stored sizes, load average. Results in $BENCH_DIR/results.
#   The clusters are stopped on exit, failures included.
#
# Environment: BENCH_DIR (default /tmp/pgark-bench-backup; wiped and
# recreated: it must be absent or made by this script), PORT (54331; the
# small cluster uses PORT+1), SCALE (100), SMALL_SCALE (30), RUNS (5, at
# least 3), ANALYSIS (1), BUILD (head; or worktree), PEERS
# (../shared/bench/peers.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/pgark-bench-backup}
PORT=${PORT:-54331}
SMALL_PORT=$((PORT + 1))
SCALE=${SCALE:-100}
SMALL_SCALE=${SMALL_SCALE:-30}
RUNS=${RUNS:-5}
ANALYSIS=${ANALYSIS:-1}
BUILD=${BUILD:-head}
PEERS=${PEERS:-$ROOT/../shared/bench/peers.sh}
MARKER=.pgark-bench-backup
NCPU=$(nproc)

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench-backup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL and the tools run as postgres via runuser)"
[ -r "$PEERS" ] || die "$PEERS not found (set PEERS)"
[ "$RUNS" -ge 3 ] || die "RUNS must be at least 3 (medians)"
case $BUILD in head | worktree) ;; *) die "BUILD must be head or worktree" ;; esac
id postgres >/dev/null 2>&1 || die "no postgres user: install Debian's postgresql package"
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PGBIN/pg_ctl" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
export PGBIN

as_pg() { runuser -u postgres -- env PATH="$PGBIN:$PATH" "$@"; }

need_deb() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  say "installing $2 (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need_deb jq jq
need_deb zstd zstd
need_deb strace strace
[ -x /usr/bin/time ] || need_deb /usr/bin/time time

# --- a fresh bench dir ------------------------------------------------------
stop_cluster() { # DIR
  [ -e "$1/pgdata/postmaster.pid" ] || return 0
  bash "$PEERS" stop "$1" || echo "bench-backup: could not stop the cluster in $1" >&2
}
if [ -e "$BENCH_DIR" ]; then
  [ -e "$BENCH_DIR/$MARKER" ] || die "$BENCH_DIR exists and was not made by this script; remove it or set BENCH_DIR"
  stop_cluster "$BENCH_DIR/small"
  stop_cluster "$BENCH_DIR/main"
  rm -rf "$BENCH_DIR"
fi
mkdir -p "$BENCH_DIR"
touch "$BENCH_DIR/$MARKER"

cleanup() {
  local rc=$?
  for d in small main; do
    if [ -e "$BENCH_DIR/$d/pgdata/postmaster.pid" ]; then
      say "stopping the $d cluster"
      stop_cluster "$BENCH_DIR/$d"
    fi
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "bench-backup: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

BIN=$BENCH_DIR/bin
WORK=$BENCH_DIR/work # owned by postgres: repositories and restores
RES=$BENCH_DIR/results
LOGS=$RES/logs
mkdir -p "$BIN" "$WORK" "$RES" "$LOGS"
chown postgres "$WORK" "$RES" "$LOGS"

# --- pgark --------------------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if [ "$BUILD" = head ]; then
  # The committed tree, so the figures belong to one commit whatever is
  # being edited in the work tree; its own target directory, so the build
  # neither waits for nor replaces anyone's target/release.
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
  load=$(load1)
  rm -f "$out"
  if ! as_pg /usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "$label (round $round) failed; log: $log"
  fi
  read -r e u s m <"$out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$label" "$round" "$e" "$u" "$s" "$m" "$load" >>"$TIMES"
  printf '   %-6s %-22s round %s: %6.2f s wall, %6.2f s cpu, %7d KiB, load %s\n' \
    "$phase" "$label" "$round" "$e" "$(echo "$u $s" | awk '{print $1 + $2}')" "$m" "$load" >&2
}

# stat PHASE LABEL FIELD [median|min|max]: over the rounds in times.tsv.
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

# paired PHASE NUM DEN: median over rounds of wall(NUM) / wall(DEN), each
# ratio taken within one round.
paired() {
  awk -F'\t' -v p="$1" -v a="$2" -v b="$3" '
    NR > 1 && $1 == p && $2 == a { x[$3] = $4 }
    NR > 1 && $1 == p && $2 == b { y[$3] = $4 }
    END {
      for (r in x) if ((r in y) && y[r] > 0) v[n++] = x[r] / y[r]
      if (n == 0) { print "nan"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2 }' "$TIMES"
}

bytes_under() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

# --- commands -----------------------------------------------------------------
# Each *_prep runs untimed (as root) before the matching timed command.
pgark_push() { # DIR PORT REPO [extra args...]
  local dir=$1 port=$2 repo=$3
  shift 3
  echo env PGHOST="$dir" PGPORT="$port" "$PGARK" backup-push "$dir/pgdata" --repo "$repo" --archive-timeout 0 "$@"
}
pgark_push_prep() { rm -rf "$1"; sync; }

pgark_fetch_prep() { # DEST
  rm -rf "$1"
  mkdir -m 0700 "$1"
  chown postgres "$1"
  sync
}

pgbr_base() { echo pgbackrest --config="$1/pgbackrest.conf" --stanza=bench; }
pgbr_push_prep() { # DIR: an empty repository with the stanza, as peers.sh makes it
  local dir=$1
  rm -rf "$dir/pgbackrest-repo"
  mkdir -p "$dir/pgbackrest-repo"
  chown postgres "$dir/pgbackrest-repo"
  # shellcheck disable=SC2046
  as_pg $(pgbr_base "$dir") stanza-create >/dev/null
  sync
}

bb_prep() { rm -rf "$1"; sync; }

LIMIT_SH=$BIN/limit.sh # peers.sh limit, as a script postgres can run
# GNU tar exits 1 when a file changed while it read it (autovacuum at work on
# the live cluster): still a complete run of the ceiling; 2 is a failure.
cat >"$LIMIT_SH" <<EOF
#!/bin/bash
tar -cf - -C "\$1/pgdata" base | zstd "-\$2" -T$NCPU -q -c >/dev/null
rc=("\${PIPESTATUS[@]}")
[ "\${rc[0]}" -le 1 ] && [ "\${rc[1]}" -eq 0 ]
EOF
chmod 0755 "$LIMIT_SH"

# ==============================================================================
# 1. small scale: peak RSS of pgark at default settings
# ==============================================================================
SMALL=$BENCH_DIR/small
say "small cluster: scale $SMALL_SCALE on port $SMALL_PORT"
bash "$PEERS" setup "$SMALL" "$SMALL_PORT" "$SMALL_SCALE"
S_REPO=$WORK/pgark-repo-small
S_DEST=$WORK/restore-small
say "small scale: $RUNS rounds of pgark backup-push, backup-fetch (default settings)"
for r in $(seq 1 "$RUNS"); do
  pgark_push_prep "$S_REPO"
  # shellcheck disable=SC2046
  timed small-push pgark "$r" $(pgark_push "$SMALL" "$SMALL_PORT" "$S_REPO")
  pgark_fetch_prep "$S_DEST"
  timed small-fetch pgark "$r" "$PGARK" backup-fetch "$S_DEST" LATEST --repo "$S_REPO"
done
S_MANIFEST=$(ls "$S_REPO"/backups/*/manifest)
S_ORIG=$(zstd -dc "$S_MANIFEST" | jq -r .original_size)
S_FILES=$(zstd -dc "$S_MANIFEST" | jq -r '.files | length')
S_STORED=$(bytes_under "$S_REPO")
stop_cluster "$SMALL"
rm -rf "$S_DEST"

# ==============================================================================
# 2. main scale: the side-by-side comparison
# ==============================================================================
MAIN=$BENCH_DIR/main
say "main cluster: scale $SCALE on port $PORT"
bash "$PEERS" setup "$MAIN" "$PORT" "$SCALE"
REPO=$WORK/pgark-repo
BB=$WORK/basebackup
D_PGARK=$WORK/restore-pgark
D_PGBR=$WORK/restore-pgbackrest
PGBR=$(pgbr_base "$MAIN")

say "warm-up and checks: peers.sh pgbackrest-full (as written), pgark push + fetch, pg_verifybackup"
bash "$PEERS" pgbackrest-full "$MAIN" "$PORT" zst
PGBR_VERSION=$(pgbackrest version)
grep -q '^process-max=' "$MAIN/pgbackrest.conf" || die "peers.sh wrote no process-max"
pgark_push_prep "$REPO"
# shellcheck disable=SC2046
as_pg $(pgark_push "$MAIN" "$PORT" "$REPO") >"$LOGS/check-push.log" 2>&1 || { cat "$LOGS/check-push.log" >&2; die "pgark backup-push failed"; }
pgark_fetch_prep "$D_PGARK"
as_pg "$PGARK" backup-fetch "$D_PGARK" LATEST --repo "$REPO" >"$LOGS/check-fetch.log" 2>&1 || { cat "$LOGS/check-fetch.log" >&2; die "pgark backup-fetch failed"; }
as_pg "$PGBIN/pg_verifybackup" -n "$D_PGARK" >"$LOGS/check-verifybackup.log" 2>&1 || { cat "$LOGS/check-verifybackup.log" >&2; die "pg_verifybackup -n rejects pgark's restore"; }
say "pg_verifybackup -n: $(tail -n1 "$LOGS/check-verifybackup.log")"
bb_prep "$BB"
as_pg pg_basebackup -h "$MAIN" -p "$PORT" -D "$BB" -Ft --compress=client-zstd -X none -c fast >"$LOGS/check-basebackup.log" 2>&1
as_pg "$LIMIT_SH" "$MAIN" 3
LIMIT_BYTES=$(as_pg bash -c "tar -cf - -C '$MAIN/pgdata' base | zstd -3 -T$NCPU -q -c | wc -c")

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say "backup-push: $RUNS rounds of pgark, pgBackRest, pg_basebackup, limit (alternated)"
for r in $(seq 1 "$RUNS"); do
  pgark_push_prep "$REPO"
  # shellcheck disable=SC2046
  timed push pgark "$r" $(pgark_push "$MAIN" "$PORT" "$REPO")
  pgbr_push_prep "$MAIN"
  # shellcheck disable=SC2086
  timed push pgbackrest "$r" $PGBR --type=full --compress-type=zst --compress-level=3 backup
  bb_prep "$BB"
  timed push pg_basebackup "$r" pg_basebackup -h "$MAIN" -p "$PORT" -D "$BB" -Ft --compress=client-zstd -X none -c fast
  sync
  timed push limit "$r" "$LIMIT_SH" "$MAIN" 3
done
MANIFEST=$(ls "$REPO"/backups/*/manifest)
ORIG=$(zstd -dc "$MANIFEST" | jq -r .original_size)
NFILES=$(zstd -dc "$MANIFEST" | jq -r '.files | length')
SIZE_PGARK=$(bytes_under "$REPO")
SIZE_PGBR=$(bytes_under "$MAIN/pgbackrest-repo")
SIZE_BB=$(bytes_under "$BB")

say "backup-fetch: $RUNS rounds of pgark, pgBackRest (alternated)"
for r in $(seq 1 "$RUNS"); do
  rm -rf "$D_PGBR"
  pgark_fetch_prep "$D_PGARK"
  timed fetch pgark "$r" "$PGARK" backup-fetch "$D_PGARK" LATEST --repo "$REPO"
  rm -rf "$D_PGARK"
  pgark_fetch_prep "$D_PGBR" # peers.sh pgbackrest-restore makes DEST the same way
  # shellcheck disable=SC2086
  timed fetch pgbackrest "$r" $PGBR --pg1-path="$D_PGBR" restore
done
rm -rf "$D_PGBR"
T_END=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ==============================================================================
# 3. where pgark's time goes
# ==============================================================================
ANALYSIS_TXT=$RES/analysis.txt
: >"$ANALYSIS_TXT"
if [ "$ANALYSIS" = 1 ]; then
  {
    echo "parts of pgark's last backup-push (files larger than a part are split into pieces):"
    zstd -dc "$MANIFEST" | jq -r '
      (.original_size) as $t | .parts[] |
      "  part \(.index): \(.original_size / 1048576 * 10 | floor / 10) MiB original (\(100 * .original_size / $t | floor)% of the backup), stored \(.stored_size / 1048576 * 10 | floor / 10) MiB"'
    zstd -dc "$MANIFEST" | jq -r '
      (.files | max_by(.size)) as $f |
      "  largest file: \($f.path), \($f.size / 1048576 | floor) MiB, in part \($f.part)"'
    zstd -dc "$MANIFEST" | jq -r --argjson n "$NCPU" '
      (.original_size) as $t | (.parts | map(.original_size) | max) as $m |
      "  largest part = \($m / $t * 100 | floor)% of the bytes: one worker encodes it alone, so the copy takes at least that\n  share of one worker doing everything (\(100 / $n | floor)% with \($n) even workers); the perf thread shares below give the CPU balance"'
  } >>"$ANALYSIS_TXT"

  say "analysis: pgark backup-push --concurrency 1 / default / 4, --compression-level 1; fetch --concurrency 1 / default"
  for r in $(seq 1 "$RUNS"); do
    for v in c1 default c4 level1; do
      case $v in
        c1) extra=(--concurrency 1) ;;
        default) extra=() ;;
        c4) extra=(--concurrency 4) ;;
        level1) extra=(--compression-level 1) ;;
      esac
      pgark_push_prep "$REPO"
      # shellcheck disable=SC2046
      timed sweep-push "$v" "$r" $(pgark_push "$MAIN" "$PORT" "$REPO" "${extra[@]}")
    done
    for v in c1 default; do
      extra=()
      [ "$v" = c1 ] && extra=(--concurrency 1)
      pgark_fetch_prep "$D_PGARK"
      timed sweep-fetch "$v" "$r" "$PGARK" backup-fetch "$D_PGARK" LATEST --repo "$REPO" "${extra[@]}"
    done
  done

  say "analysis: peak RSS by --concurrency with --compression none (every upload buffer fills)"
  {
    echo
    echo "peak RSS of backup-push by concurrency, --compression none (the worst case for memory:"
    echo "every part stores as much as it reads), one run each:"
    for c in 1 2 4; do
      pgark_push_prep "$REPO"
      # shellcheck disable=SC2046
      timed rss-none "c$c" 1 $(pgark_push "$MAIN" "$PORT" "$REPO" --compression none --concurrency "$c")
      printf '  --concurrency %s: %d KiB\n' "$c" "$(stat_of rss-none "c$c" rss)"
    done
    echo "(the default concurrency is the number of CPUs: $NCPU here)"
  } >>"$ANALYSIS_TXT"

  say "analysis: phases of one push (--log-level info, time-stamped)"
  pgark_push_prep "$REPO"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2046
  as_pg $(pgark_push "$MAIN" "$PORT" "$REPO" --log-level info) 2>&1 >/dev/null |
    while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$LOGS/phases-push.log"
  t1=$(date +%s.%N)
  {
    echo
    echo "phases of one backup-push (seconds since the command started):"
    awk -v t0="$t0" -v t1="$t1" '
      / started at / { s = $1 - t0 }
      / complete: / { c = $1 - t0 }
      END {
        printf "  connect, checks, start checkpoint   %6.2f\n", s
        printf "  copy (scan, parts, pg_control, stop) %6.2f\n", c - s
        printf "  manifest and exit                    %6.2f\n", t1 - t0 - c
        printf "  total                                %6.2f\n", t1 - t0 }' "$LOGS/phases-push.log"
  } >>"$ANALYSIS_TXT"

  say "analysis: syncfs time of one fetch (strace --seccomp-bpf -e syncfs)"
  pgark_fetch_prep "$D_PGARK"
  t0=$(date +%s.%N)
  as_pg strace -f --seccomp-bpf -e trace=syncfs,fsync -T -o "$LOGS/strace-fetch.log" \
    "$PGARK" backup-fetch "$D_PGARK" LATEST --repo "$REPO" >/dev/null 2>&1
  t1=$(date +%s.%N)
  {
    echo
    awk -v t0="$t0" -v t1="$t1" '
      /syncfs\(/ { gsub(/[<>]/, "", $NF); s += $NF }
      /fsync\(/ { gsub(/[<>]/, "", $NF); f += $NF; n++ }
      END { printf "one backup-fetch under strace: %.2f s in all, %.2f s in syncfs(2), %.2f s in %d fsync(2)\n", t1 - t0, s, f, n }' \
      "$LOGS/strace-fetch.log"
  } >>"$ANALYSIS_TXT"

  if perf stat -e task-clock true >/dev/null 2>&1; then
    say "analysis: perf profiles of one push and one fetch"
    # Self time of each sample's top frame, grouped; SHA-256 is split by
    # its caller (the DWARF call graph): the per-file checksums of the
    # manifest, or the whole-part checksum of the object trailer.
    categorize() { # perf.data
      perf script -i "$1" -F tid,ip,sym 2>/dev/null | awk '
        function flush() {
          if (!n) return
          total++; thr[tid]++; top = st[1]
          if (top ~ /sha2::|sha256|Sha256/) {
            who = "SHA-256, other caller"
            for (i = 2; i <= n; i++) {
              if (st[i] ~ /ExactReader/) { who = "SHA-256 per file (manifest checksums)"; break }
              if (st[i] ~ /ObjectWriter|ObjectReader/) { who = "SHA-256 of the whole part (object trailer)"; break }
              if (st[i] ~ /backup_fetch::extract/) { who = "SHA-256 per file (manifest checksums)"; break }
            }
          } else if (top ~ /crc32c|crc_u64|CRC32C/) who = "CRC-32C (per-file checksums)"
          else if (top ~ /XXH64|XXH_/) who = "zstd frame checksum (XXH64)"
          else if (top ~ /ZSTD_|HUF_|FSE_|HIST_|BIT_|zstd/) who = "zstd"
          else if (top ~ /memcpy|memmove|memset/) who = "memcpy/memset"
          else if (kernel) who = "kernel (read/write syscalls, page cache, file creation, scheduling)"
          else if (top ~ /tar::/) who = "tar"
          else who = "other"
          c[who]++; n = 0; kernel = 0
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*[0-9]+[ \t]*$/ { flush(); tid = $1 + 0; next }
        {
          line = $0; sub(/^[ \t]*[0-9a-f]+ /, "", line); st[++n] = line
          if (n == 1 && ($1 ~ /^ffffffff/ || line ~ /\[kernel/)) kernel = 1
        }
        END {
          flush()
          for (w in c) printf "  %5.1f%%  %s\n", 100 * c[w] / total, w | "sort -rn"
          close("sort -rn")
          m = 0
          for (t in thr) v[++m] = thr[t]
          for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] > v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
          printf "  busiest threads, share of all samples (%d):", total
          for (i = 1; i <= m && i <= 4; i++) printf " %.0f%%", 100 * v[i] / total
          printf "\n" }'
      echo "  top symbols (self):"
      perf report -i "$1" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
        awk '$1 ~ /%$/ && n < 10 { n++; sub(/ +- +- *$/, ""); printf "  %s\n", $0 }'
    }
    pgark_push_prep "$REPO"
    # shellcheck disable=SC2046
    perf record -q -F 199 --call-graph dwarf,16384 -o "$RES/perf-push.data" -- \
      runuser -u postgres -- $(pgark_push "$MAIN" "$PORT" "$REPO") >/dev/null 2>&1
    pgark_fetch_prep "$D_PGARK"
    perf record -q -F 199 --call-graph dwarf,16384 -o "$RES/perf-fetch.data" -- \
      runuser -u postgres -- "$PGARK" backup-fetch "$D_PGARK" LATEST --repo "$REPO" >/dev/null 2>&1
    {
      echo
      echo "perf profile of one backup-push (all threads; share of samples by cost):"
      categorize "$RES/perf-push.data"
      echo
      echo "perf profile of one backup-fetch:"
      categorize "$RES/perf-fetch.data"
    } >>"$ANALYSIS_TXT"
  else
    echo "perf does not work here: no profile" >>"$ANALYSIS_TXT"
  fi
  rm -rf "$D_PGARK"
fi

# ==============================================================================
# 4. summary
# ==============================================================================
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { # VALUE OP GOAL
  awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
    ok = (op == ">=") ? v >= g : (op == "<=") ? v <= g : (op == ">") ? v > g : 0
    print ok ? "met" : "MISSED" }'
}
row() { # PHASE LABEL NAME
  printf '%-30s %8.2f %8.2f %8.2f %8.2f %10d\n' "$3" \
    "$(stat_of "$1" "$2" wall)" "$(stat_of "$1" "$2" wall min)" "$(stat_of "$1" "$2" wall max)" \
    "$(stat_of "$1" "$2" cpu)" "$(stat_of "$1" "$2" rss max)"
}
goal() { # TEXT NUM_PHASE NUM_LABEL DEN_PHASE DEN_LABEL OP GOAL
  local med pr cpu
  med=$(ratio "$(stat_of "$2" "$3" wall)" "$(stat_of "$4" "$5" wall)")
  pr=$(paired "$2" "$3" "$5")
  cpu=$(ratio "$(stat_of "$2" "$3" cpu)" "$(stat_of "$4" "$5" cpu)")
  printf '%-30s %8s %8.2f %8s   %-7s %s\n' "$1" "$med" "$pr" "$cpu" "$6 $7" "$(verdict "$med" "$6" "$7")"
}
load_stats() {
  awk -F'\t' 'NR > 1 && ($1 == "push" || $1 == "fetch") { a[n++] = $8 + 0 }
    END { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      printf "min %.2f, median %.2f, max %.2f", a[0], (n % 2) ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2, a[n - 1] }' "$TIMES"
}

{
  echo "pgark: $PGARK_VERSION (commit $COMMIT${DIRTY:+, work tree with uncommitted changes}), release build"
  echo "pgBackRest: $PGBR_VERSION; $("$PGBIN/pg_basebackup" --version); $(zstd --version | head -n1); $(tar --version | head -n1)"
  echo "machine: $NCPU CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r), sched_autogroup_enabled=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a)"
  echo "runs: $T_START to $T_END; $RUNS rounds, tools alternated within each round"
  echo "load average (1 min) before each timed command: $(load_stats); 1/5/15 min before: $LOAD_BEFORE, after: $LOAD_AFTER"
  echo "cluster: pgbench scale $SCALE, $NFILES files, $(mib "$ORIG") MiB backed up (pgark's manifest); small: scale $SMALL_SCALE, $S_FILES files, $(mib "$S_ORIG") MiB"
  echo
  echo "backup-push, scale $SCALE (seconds; cpu = user + sys, median; RSS = largest single process, KiB, max over rounds)"
  printf '%-30s %8s %8s %8s %8s %10s\n' tool median min max cpu "peak RSS"
  row push pgark "pgark backup-push"
  row push pgbackrest "pgBackRest backup (full)"
  row push pg_basebackup "pg_basebackup client-zstd"
  row push limit "limit: tar | zstd -3 -T$NCPU"
  echo
  echo "backup-fetch, scale $SCALE"
  printf '%-30s %8s %8s %8s %8s %10s\n' tool median min max cpu "peak RSS"
  row fetch pgark "pgark backup-fetch"
  row fetch pgbackrest "pgBackRest restore"
  echo
  echo "ratios of wall times: of the medians, and the median of the per-round ratios (paired);"
  echo "cpu: the same ratio of median CPU times (user + sys; pg_basebackup's excludes the server's walsender)"
  printf '%-30s %8s %8s %8s   %-7s %s\n' ratio medians paired cpu goal "(on medians)"
  goal "push: pgBackRest / pgark" push pgbackrest push pgark ">=" 2.5
  goal "push: pgark / limit" push pgark push limit "<=" 1.25
  goal "push: pg_basebackup / pgark" push pg_basebackup push pgark ">" 1
  goal "fetch: pgBackRest / pgark" fetch pgbackrest fetch pgark ">=" 2.5
  echo
  echo "pgark peak RSS (KiB; median and max over $RUNS runs each; goal <= 65536 at both scales)"
  for sc in "small:$SMALL_SCALE" "main:$SCALE"; do
    p=${sc%%:*} s=${sc#*:}
    pp=push pf=fetch
    [ "$p" = small ] && pp=small-push pf=small-fetch
    mp=$(stat_of "$pp" pgark rss max) mf=$(stat_of "$pf" pgark rss max)
    printf '  scale %-4s backup-push %7d (max %7d) %-6s  backup-fetch %7d (max %7d) %s\n' "$s" \
      "$(stat_of "$pp" pgark rss)" "$mp" "$(verdict "$mp" "<=" 65536)" \
      "$(stat_of "$pf" pgark rss)" "$mf" "$(verdict "$mf" "<=" 65536)"
  done
  printf '  small scale times (median s): backup-push %.2f, backup-fetch %.2f\n' \
    "$(stat_of small-push pgark wall)" "$(stat_of small-fetch pgark wall)"
  echo
  echo "stored sizes, scale $SCALE (bytes; original $ORIG)"
  printf '  %-34s %12d  (%.2f%%)\n' "pgark repository" "$SIZE_PGARK" "$(awk -v a="$SIZE_PGARK" -v b="$ORIG" 'BEGIN { print 100 * a / b }')"
  printf '  %-34s %12d  (%.2f%%)\n' "pgBackRest repository" "$SIZE_PGBR" "$(awk -v a="$SIZE_PGBR" -v b="$ORIG" 'BEGIN { print 100 * a / b }')"
  printf '  %-34s %12d  (%.2f%%)\n' "pg_basebackup (base.tar.zst + manifest)" "$SIZE_BB" "$(awk -v a="$SIZE_BB" -v b="$ORIG" 'BEGIN { print 100 * a / b }')"
  printf '  %-34s %12d  (%.2f%%, base/ only)\n' "limit: zstd -3 of tar of base/" "$LIMIT_BYTES" "$(awk -v a="$LIMIT_BYTES" -v b="$ORIG" 'BEGIN { print 100 * a / b }')"
  printf '  %-34s %12d\n' "pgark repository, scale $SMALL_SCALE" "$S_STORED"
  if [ "$ANALYSIS" = 1 ]; then
    echo
    echo "pgark settings sweep, scale $SCALE (median wall s / median cpu s over $RUNS rounds, alternated)"
    for v in c1 default c4 level1; do
      printf '  backup-push  %-8s %6.2f / %6.2f\n' "$v" "$(stat_of sweep-push "$v" wall)" "$(stat_of sweep-push "$v" cpu)"
    done
    for v in c1 default; do
      printf '  backup-fetch %-8s %6.2f / %6.2f\n' "$v" "$(stat_of sweep-fetch "$v" wall)" "$(stat_of sweep-fetch "$v" cpu)"
    done
    echo "  (c1 = --concurrency 1, default = $NCPU, c4 = --concurrency 4, level1 = --compression-level 1)"
    echo
    cat "$ANALYSIS_TXT"
  fi
} | tee "$RES/summary.txt"
say "results in $RES (summary.txt, times.tsv, analysis.txt, logs/)"
