#!/usr/bin/env bash
# pgark's main job on a scratch cluster, with the default local repository:
#
#   bash scripts/demo.sh            # from the project root, as root or with sudo
#
#   1. .ci/install-deps.sh installs PostgreSQL (and the zstd/lz4/xz tools) if
#      missing; `cargo build --release` builds pgark.
#   2. A throwaway cluster is initdb'd in a new scratch directory (data
#      checksums on, Unix socket in the scratch directory, a free port,
#      listening on 127.0.0.1 only) with
#        archive_mode = on
#        archive_command = '<scratch>/bin/pgark wal-push --repo <scratch>/repo %p'
#   3. pgbench -i -s 5 and a few pg_switch_wal() calls generate WAL; the
#      script waits (at most $PGARK_DEMO_TIMEOUT seconds, default 120) until
#      pg_stat_archiver reports the last switched segment archived.
#   4. It shows what landed in the repository (files and sizes,
#      repository.json), pg_stat_archiver, and fetches every archived segment
#      back with `pgark wal-fetch`, comparing each with `cmp` against the
#      original still in pg_wal (checkpoint_timeout is 1h, so PostgreSQL does
#      not recycle them while the script runs). One segment is also restored
#      by hand with the standard zstd tool.
#   5. The cluster is stopped (on failure too); the scratch directory is kept
#      and the command to remove it printed.
#
# PostgreSQL refuses to run as root: as root, initdb, pg_ctl, psql, pgbench
# and therefore pgark (run by the server) run as the `postgres` user, the
# scratch directory belongs to it, and pgark is copied to <scratch>/bin,
# since the build directory may sit below a home postgres cannot enter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TIMEOUT=${PGARK_DEMO_TIMEOUT:-120}

say() { printf '\n== %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# --- Dependencies and build -------------------------------------------------

say "bash .ci/install-deps.sh"
bash .ci/install-deps.sh

command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
say "cargo build --release"
cargo build --release
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
case $target_dir in /*) ;; *) target_dir=$ROOT/$target_dir ;; esac
built=$target_dir/release/pgark
[ -x "$built" ] || die "cargo build succeeded but $built does not exist"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || die "no PostgreSQL under /usr/lib/postgresql/*/bin"

# --- Scratch directory and the account PostgreSQL runs as -------------------

scratch=$(mktemp -d /tmp/pgark-demo.XXXXXX)
# The path goes unquoted into postgresql.conf and archive_command.
[[ $scratch =~ ^[A-Za-z0-9._/-]+$ ]] || die "unexpected scratch path $scratch"
data=$scratch/data
repo=$scratch/repo
sock=$scratch/run
bin=$scratch/bin/pgark
log=$scratch/server.log
mkdir -p "$scratch/bin" "$sock" "$scratch/fetched" "$scratch/by-hand"
install -m 0755 "$built" "$bin"

if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || die "no postgres user (.ci/install-deps.sh creates it)"
    chown -R postgres:postgres "$scratch"
    # Run from the scratch directory: postgres may not be able to enter ours.
    as_pg() { (cd "$scratch" && runuser -u postgres -- "$@"); }
    runs_as=postgres
else
    as_pg() { (cd "$scratch" && "$@"); }
    runs_as=$(id -un)
fi

started=
finish() {
    local rc=$?
    if [ -n "$started" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ]; then
        printf '\ndemo: failed (exit %s); server log: %s\n' "$rc" "$log" >&2
        [ -f "$log" ] && tail -n 20 "$log" | sed 's/^/  | /' >&2
        printf 'demo: scratch directory kept: %s (remove it with: rm -rf %s)\n' "$scratch" "$scratch" >&2
    fi
}
trap finish EXIT

psql_c() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres "$@"; }
psql_1() { psql_c -A -t -c "$1"; }

# --- The cluster --------------------------------------------------------------

say "initdb (PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), as $runs_as) in $data"
as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust --data-checksums \
    --encoding=UTF8 --locale=C --no-sync >/dev/null
cat >>"$data/postgresql.conf" <<EOF

# --- scripts/demo.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
archive_mode = on
archive_command = '$bin wal-push --repo $repo %p'
# Keep completed segments in pg_wal while the demo runs, to compare with.
checkpoint_timeout = '1h'
EOF

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_free "$port" || continue
    echo "port = $port" >>"$data/postgresql.conf"
    if as_pg "$PGBIN/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null; then
        started=1
        break
    fi
    # Lost a race for the port: try another one; anything else is fatal.
    grep -q 'could not bind\|Address already in use' "$log" || die "the server did not start"
done
[ -n "$started" ] || die "no free port found for the server"
echo "server running: port $port on 127.0.0.1, socket in $sock"
echo "archive_command = $(psql_1 'show archive_command')"

# --- WAL ----------------------------------------------------------------------

say "pgbench -i -s 5"
as_pg "$PGBIN/pgbench" -h "$sock" -p "$port" -U postgres -i -s 5 -q postgres 2>&1 | tail -n 1
say "select pg_switch_wal(), three times, with a little writing in between"
psql_c -c 'create table demo (id int, at timestamptz default now())'
for i in 1 2 3; do
    psql_1 "insert into demo (id) values ($i)"
    last=$(psql_1 'select pg_walfile_name(pg_switch_wal())')
    echo "switched away from $last"
done

say "waiting for $last to be archived (at most ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
while :; do
    archived=$(psql_1 "select coalesce(last_archived_wal, '') from pg_stat_archiver")
    if [ -n "$archived" ] && [[ ! $archived < $last ]]; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        psql_c -x -c 'select * from pg_stat_archiver' >&2
        die "timed out after ${TIMEOUT}s: $last is not archived yet (last archived: ${archived:-none}); see the server log"
    fi
    sleep 0.5
done
echo "archived up to $archived after $((SECONDS - deadline + TIMEOUT))s"

# --- What landed ----------------------------------------------------------------

say "find $repo -type f | sort (bytes, path)"
(cd "$repo" && find . -type f -printf '%P %s\n') | sort |
    awk '{ printf "%10d  %s\n", $2, $1 }'
say "cat $repo/repository.json"
cat "$repo/repository.json"
say "select * from pg_stat_archiver"
psql_c -x -c 'select * from pg_stat_archiver'

say "wal-fetch of every archived segment, compared with the original in pg_wal"
seg_size=$(psql_1 "select pg_size_bytes(current_setting('wal_segment_size'))")
segments=$(cd "$repo/wal" && find . -type f -printf '%f\n' | grep -E '^[0-9A-F]{24}$' | sort)
n=0 same=0 gone=0 stored=0
for seg in $segments; do
    n=$((n + 1))
    obj=$(find "$repo/wal" -type f -name "$seg")
    stored=$((stored + $(stat -c %s "$obj")))
    as_pg "$bin" wal-fetch --repo "$repo" "$seg" "$scratch/fetched/$seg"
    if [ ! -f "$data/pg_wal/$seg" ]; then
        gone=$((gone + 1))
        continue
    fi
    cmp "$scratch/fetched/$seg" "$data/pg_wal/$seg" || die "$seg: fetched copy differs from pg_wal/$seg"
    same=$((same + 1))
done
echo "$n segments fetched; $same identical to pg_wal (cmp), $gone no longer in pg_wal to compare"
awk -v n="$n" -v seg="$seg_size" -v st="$stored" 'BEGIN {
    printf "original %.1f MiB, stored %.1f MiB (zstd, ratio %.2f)\n", n * seg / 1048576, st / 1048576, n * seg / st }'

say "the last one, $last, in detail"
obj=$(find "$repo/wal" -type f -name "$last")
echo "\$ pgark wal-fetch --log-level info --repo $repo $last $scratch/fetched/$last"
as_pg "$bin" wal-fetch --log-level info --repo "$repo" "$last" "$scratch/fetched/$last"
echo "\$ cmp $scratch/fetched/$last $data/pg_wal/$last && echo identical"
cmp "$scratch/fetched/$last" "$data/pg_wal/$last" && echo identical
echo "# sha256 of the fetched file, of the original, and as recorded in the object's trailer"
sha256sum "$scratch/fetched/$last" "$data/pg_wal/$last"
printf '%s  (trailer of %s)\n' "$(tail -c 32 "$obj" | od -An -tx1 | tr -d ' \n')" "${obj#"$scratch"/}"

say "restored by hand, without pgark: zstd -dc OBJECT > FILE"
zstd -q -dc "$obj" >"$scratch/by-hand/$last"
cmp "$scratch/by-hand/$last" "$data/pg_wal/$last" && echo "zstd -dc ${obj#"$scratch"/}: identical to pg_wal/$last"

# --- Done -----------------------------------------------------------------------

say "pg_ctl stop"
as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
started=
echo "server stopped"
echo
echo "scratch directory kept: $scratch"
echo "  repository   $repo"
echo "  cluster      $data   (server log: $log)"
echo "remove it with: rm -rf $scratch"
