#!/usr/bin/env bash
# The first hour with pgark, on a scratch cluster, in a few minutes:
#
#   bash scripts/demo.sh                          # from the project root, as root or with sudo
#   PGARK_BIN=/path/to/pgark bash scripts/demo.sh # use this binary, skip `cargo build --release`
#
#   1. Installs what it needs if missing (`.ci/install-deps.sh --runtime`:
#      PostgreSQL, the zstd/lz4/xz tools, the `postgres` account), then
#      builds pgark with `cargo build --release` unless PGARK_BIN names one.
#   2. initdb's a scratch cluster under /tmp/pgark-demo.XXXXXX (data
#      checksums on, socket in the scratch directory, a free port, 127.0.0.1
#      only) that archives its WAL with `pgark wal-push`.
#   3. pgbench -i and a table `orders`, then a base backup
#      (`pgark backup-push`).
#   4. More writes; the checksum of every row of `orders` and the time are
#      noted; then the mistake: DROP TABLE orders. The moment is found in the
#      server log (log_statement = 'ddl') and the WAL holding it archived.
#   5. `pgark backup-fetch --target-time` restores the backup into a new
#      directory with recovery to just before the DROP; started on another
#      port, its `orders` must have the checksum noted before the mistake
#      (the demo fails if not).
#   6. `pgark restore-test`, `pgark status` and `pgark backup-list`.
#   7. Stops its servers (on any exit: failure, Ctrl-C, kill) and keeps the
#      scratch directory, printing what is in it and how to remove it.
#
# Environment: PGARK_BIN (a pgark binary to use instead of building one),
# PGARK_DEMO_TIMEOUT (seconds each wait may take, default 120).
#
# PostgreSQL refuses to run as root: as root, every PostgreSQL program and
# pgark run as the `postgres` user, with the scratch directory its own and
# pgark copied into it (the build directory may sit below a home postgres
# cannot enter). The commands are shown as a DBA would type them, with
# PATH=<scratch>/bin:<PostgreSQL bin> and PGHOST/PGPORT/PGUSER set.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TIMEOUT=${PGARK_DEMO_TIMEOUT:-120}
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || { echo "demo: PGARK_DEMO_TIMEOUT must be a number of seconds" >&2; exit 2; }

# The script's own stdout and stderr, for what must be seen even while a
# command's output is sent elsewhere (as_pg closes them for its commands).
exec 3>&1 4>&2
step=0
say() { step=$((step + 1)); printf '\n== %d. %s\n' "$step" "$*"; }
note() { printf '# %s\n' "$*"; }
die() { printf '\ndemo: error: %s\n' "$*" >&2; exit 1; }

# A command as one would type it, quoted where a word needs it.
shown() {
    local out='$' word q="'\\''"
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
            out+=" $word"
        elif [[ $word != *"'"* ]]; then
            out+=" '$word'"
        elif [[ $word != *[\"\$\`\\]* ]]; then
            out+=" \"$word\""
        else
            out+=" '${word//\'/$q}'"
        fi
    done
    printf '%s\n' "$out" >&3
}

# --- 1. What it needs ---------------------------------------------------------

say "Install what pgark needs (only what is missing)"
shown bash .ci/install-deps.sh --runtime
bash .ci/install-deps.sh --runtime

if [ -n "${PGARK_BIN:-}" ]; then
    built=$PGARK_BIN
    [[ -f $built && -x $built ]] || die "PGARK_BIN=$built is not an executable file"
    note "PGARK_BIN=$built: not building"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first, or give PGARK_BIN=/path/to/pgark"
    shown cargo build --release
    cargo build --release
    target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    case $target_dir in /*) ;; *) target_dir=$ROOT/$target_dir ;; esac
    built=$target_dir/release/pgark
    [ -x "$built" ] || die "cargo build succeeded but $built does not exist"
fi
"$built" --version >/dev/null 2>&1 || die "$built --version failed: is it a pgark binary for this machine?"

PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
[[ -n $PGBIN && -x $PGBIN/initdb ]] || die "no PostgreSQL under /usr/lib/postgresql/*/bin"
began=$SECONDS

# --- The scratch directory, and how commands run ------------------------------

scratch=$(mktemp -d /tmp/pgark-demo.XXXXXX)
# The path goes unquoted into postgresql.conf and archive_command.
[[ $scratch =~ ^[A-Za-z0-9._/-]+$ ]] || die "unexpected scratch path $scratch"
data=$scratch/data
restored=$scratch/restored
repo=$scratch/repo
sock=$scratch/run
log=$scratch/server.log
restored_log=$scratch/restored.log
mkdir -p "$scratch/bin" "$sock"
install -m 0755 "$built" "$scratch/bin/pgark"
port=
starting=

if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || die "no postgres user (.ci/install-deps.sh creates it)"
    chown -R postgres:postgres "$scratch"
    as=(runuser -u postgres --)
    runs_as=postgres
else
    as=()
    runs_as=$(id -un)
fi
# Runs a command as the account PostgreSQL runs as, from the scratch
# directory (postgres may not be able to enter ours), with pgark and
# PostgreSQL's programs on PATH, the demo server as libpq's default and no
# pager. In the background, waited for: a SIGTERM sent to the script alone
# interrupts the wait, and finish passes it on to the command.
child=
as_pg() {
    local rc=0
    (cd "$scratch" && exec "${as[@]}" env PATH="$scratch/bin:$PGBIN:/usr/bin:/bin" \
        PGHOST="$sock" PGPORT="${port:-5432}" PGUSER=postgres PGDATABASE=postgres \
        PSQLRC=/dev/null PAGER=cat PSQL_PAGER=cat "$@" 3>&- 4>&-) &
    child=$!
    wait "$child" || rc=$?
    child=
    return "$rc"
}
# Shows a command, then runs it so.
run() { shown "$@"; as_pg "$@"; }
# A query of the demo's own (not shown): q [-p PORT] -c SQL.
q() { as_pg psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }

# Stops whichever of the demo's servers runs, whatever the way out. It
# writes to the script's own stdout and stderr (3 and 4), since a signal may
# come while a command's output goes elsewhere.
finish() {
    local rc=$? d
    trap - EXIT
    trap "" INT TERM HUP # a second Ctrl-C does not cut the clean-up short
    exec 1>&3 2>&4
    # The command running when a signal came (pgark restore-test stops
    # its own server and removes its directory on SIGTERM): give it 30 s to
    # end. As root, the signal goes to the command under runuser, which
    # would kill it 2 s after a signal of its own.
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        d=$child
        [ "${#as[@]}" -gt 0 ] && d=$(pgrep -P "$child" | head -n 1) && [ -n "$d" ] || d=$child
        kill -TERM "$d" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$child" 2>/dev/null || break
            sleep 0.5
        done
    fi
    for d in "$restored" "$data"; do
        # A server whose pg_ctl start was cut short may not have written
        # its postmaster.pid yet.
        [ "$d" = "$starting" ] && [ ! -f "$d/postmaster.pid" ] && sleep 2
        if [ -f "$d/postmaster.pid" ] && as_pg pg_ctl -D "$d" status >/dev/null 2>&1; then
            as_pg pg_ctl -D "$d" -m fast -w -t 30 stop >/dev/null 2>&1 ||
                as_pg pg_ctl -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
                printf 'demo: could not stop the server of %s\n' "$d" >&2
            printf 'demo: stopped the server of %s\n' "$d" >&2
        fi
    done
    if [ "$rc" -ne 0 ]; then
        printf '\ndemo: failed or interrupted (exit %s) after %ss\n' "$rc" "$((SECONDS - began))" >&2
        for d in "$log" "$restored_log"; do
            [ -s "$d" ] || continue
            printf 'demo: the end of %s:\n' "$d" >&2
            tail -n 15 "$d" | sed 's/^/  | /' >&2
        done
        printf 'demo: scratch directory kept: %s (remove it with: rm -rf %s)\n' "$scratch" "$scratch" >&2
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until pg_stat_archiver reports segment $1 (or a later one) archived.
wait_archived() {
    local want=$1 got failed deadline=$((SECONDS + TIMEOUT))
    while :; do
        got=$(q -c "select coalesce(last_archived_wal, '') from pg_stat_archiver")
        if [ -n "$got" ] && [[ ! $got < $want ]]; then
            return 0
        fi
        failed=$(q -c "select coalesce(last_failed_wal, '') from pg_stat_archiver
                    where last_failed_time > coalesce(last_archived_time, '-infinity')")
        if [ "$SECONDS" -ge "$deadline" ]; then
            as_pg psql -X -x -c 'select * from pg_stat_archiver' >&2
            die "timed out after ${TIMEOUT}s waiting for $want to be archived (last archived: ${got:-none}${failed:+, failing: $failed}); see $log"
        fi
        sleep 0.5
    done
}

# --- 2. The cluster -------------------------------------------------------------

say "A scratch cluster that archives its WAL with pgark"
note "as $runs_as, with PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') from $PGBIN, in $scratch"
run initdb -D "$data" -U postgres --auth=trust --data-checksums --encoding=UTF8 --locale=C --no-sync >/dev/null
port=$(free_port)
cat >>"$data/postgresql.conf" <<EOF

# --- scripts/demo.sh ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
archive_mode = on
archive_command = '$scratch/bin/pgark wal-push --repo $repo %p'
log_statement = 'ddl'
log_line_prefix = '%m [%p] '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
note "added to $data/postgresql.conf:"
sed -n '/^# --- scripts\/demo.sh ---$/,$p' "$data/postgresql.conf" | tail -n +2 | sed 's/^/    /'
starting=$data
run pg_ctl -D "$data" -l "$log" -w -t "$TIMEOUT" start >/dev/null ||
    die "the server did not start (port $port taken meanwhile?); see $log"
note "running on 127.0.0.1:$port; psql, pgbench and pgark below connect with PGHOST=$sock PGPORT=$port PGUSER=postgres"

# --- 3. Data and a base backup --------------------------------------------------

say "Some data, then a base backup"
shown pgbench -i -s 5 -q
as_pg pgbench -i -s 5 -q 2>&1 | tail -n 1
run psql -q -c "create table orders (
    id bigint generated always as identity primary key,
    customer text not null,
    amount numeric(10,2) not null,
    created_at timestamptz not null default now())"
run psql -c "insert into orders (customer, amount)
    select 'customer ' || g % 500, round((random() * 200)::numeric, 2) from generate_series(1, 10000) g"
run pgark --repo "$repo" --log-level info backup-push "$data"

# --- 4. More work, then the mistake -------------------------------------------------

say "More work after the backup, then a mistake"
run psql -c "insert into orders (customer, amount)
    select 'customer ' || g % 500, round((random() * 200)::numeric, 2) from generate_series(1, 5000) g"
run psql -c "update orders set amount = amount * 1.1 where id % 7 = 0"
shown pgbench -c 2 -T 5 -n
as_pg pgbench -c 2 -T 5 -n >"$scratch/pgbench.log" 2>&1 || die "pgbench failed; see $scratch/pgbench.log"
grep -E '^(number of transactions actually processed|tps)' "$scratch/pgbench.log" || true
sql_sum="select count(*) || ' rows, md5 ' || md5(string_agg(o::text, ',' order by id)) from orders o"
shown psql -At -c "$sql_sum"
before=$(as_pg psql -At -c "$sql_sum")
echo "$before"
shown psql -At -c "select now()"
noted=$(as_pg psql -At -c "select now()")
echo "$noted"
note "(noted: the last good moment)"
sleep 1
run psql -c "drop table orders"
note "Oops."

say "Find the moment of the mistake, and make sure its WAL is archived"
note "log_statement = 'ddl' put every DDL statement, with its time, in the server log:"
shown grep -i "statement: drop table orders" "$log"
line=$(grep -i "statement: drop table orders" "$log" | tail -n 1) || die "the DROP is not in $log"
echo "$line"
# '2026-12-03 10:50:12.345 UTC [4321] LOG: ...': its first three words. The
# DROP commits after its statement was logged, so recovering up to this
# time keeps every transaction committed before it and leaves the DROP out.
target=$(awk '{ print $1 " " $2 " " $3 }' <<<"$line")
[ "$(q -c "select '$noted'::timestamptz < '$target'::timestamptz")" = t ] ||
    die "the DROP's time in the log ($target) is not after the time noted before it ($noted)"
note "target: $target (the DROP statement's start; the time noted before it, $noted, would do too)"
shown psql -At -c "select pg_walfile_name(pg_switch_wal())"
seg=$(as_pg psql -At -c "select pg_walfile_name(pg_switch_wal())")
echo "$seg"
note "waiting (at most ${TIMEOUT}s) until pg_stat_archiver reports $seg archived"
wait_archived "$seg"
run psql -c "select last_archived_wal, last_archived_time, failed_count from pg_stat_archiver"

# --- 5. Point-in-time restore -------------------------------------------------------

say "Restore into a new directory, to just before the mistake"
run pgark --repo "$repo" backup-fetch "$restored" LATEST \
    --target-time "$target" --target-action promote --archive-mode off
note "the recovery settings backup-fetch wrote ($restored/postgresql.auto.conf):"
grep -E '^(restore_command|recovery_target_time|recovery_target_action|archive_mode) ' \
    "$restored/postgresql.auto.conf" | sed 's/^/    /'
port2=$(free_port)
starting=$restored
run pg_ctl -D "$restored" -l "$restored_log" -o "-p $port2" -w -t "$TIMEOUT" start >/dev/null ||
    die "the restored server did not start; see $restored_log"
note "waiting (at most ${TIMEOUT}s) until recovery has ended and the server is promoted"
deadline=$((SECONDS + TIMEOUT))
until [ "$(q -p "$port2" -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "the restored server is still recovering after ${TIMEOUT}s; see $restored_log"
    sleep 0.5
done
shown grep -E "recovery stopping|selected new timeline" "$restored_log"
grep -E "recovery stopping|selected new timeline" "$restored_log" | sed 's/^/    /' || true
shown psql -p "$port2" -At -c "$sql_sum"
after=$(as_pg psql -p "$port2" -At -c "$sql_sum") || die "orders cannot be read on the restored server"
echo "$after"
if [ "$after" != "$before" ]; then
    printf '\ndemo: FAILED: orders after the restore differs from before the mistake\n  before: %s\n  after:  %s\n' \
        "$before" "$after" >&2
    exit 1
fi
note "orders is back, row for row: the same checksum as before the DROP"
run pg_ctl -D "$restored" -m fast -w -t "$TIMEOUT" stop >/dev/null

# --- 6. Test, status, list ---------------------------------------------------------

say "Prove the latest backup restores (restore-test), then status and the list"
run pgark --repo "$repo" restore-test LATEST --timeout "${TIMEOUT}s"
status_rc=0
run pgark --repo "$repo" status || status_rc=$?
[ "$status_rc" -eq 0 ] || note "status exited $status_rc (12: not healthy, see above)"
run pgark --repo "$repo" backup-list

# --- 7. Done -------------------------------------------------------------------------

say "Stop the server; keep the scratch directory"
run pg_ctl -D "$data" -m fast -w -t "$TIMEOUT" stop >/dev/null
echo
echo "done in $((SECONDS - began))s (after the build)"
echo "scratch directory kept: $scratch"
echo "  $repo         the repository: WAL and the base backup"
echo "  $data         the cluster (its log: $log)"
echo "  $restored     the point-in-time restore (its log: $restored_log)"
echo "remove it with: rm -rf $scratch"
