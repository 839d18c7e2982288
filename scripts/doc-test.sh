#!/usr/bin/env bash
# The documentation test: runs every command example of README.md and
# docs/*.md, so the documentation cannot drift from the program.
#
#   bash scripts/doc-test.sh [FILE.md ...]     # from anywhere; default: all
#
# Fenced blocks are told apart by their info string (the word after the
# opening fence):
#
#   sh         a command example: run, and it must exit 0
#   sh-norun   a command example that cannot run here (a real cloud, a host
#              name of the reader's network): counted and listed, not run
#   console, text              output
#   conf, ini, toml, yaml, sql a file's contents (yaml is parsed); with
#              `file=NAME` after the language (```sql file=checks.sql) the
#              block is written to NAME in the examples' working directory
#              before the file's examples run
#
# Any other info string, and a fence without one, fails the test: every
# block says what it is.
#
# The examples run file by file (README.md first, then docs/*.md in name
# order), each block in a fresh `bash` with `set -euo pipefail`, against
# one scratch cluster this script creates: initdb as the `postgres` user
# (PostgreSQL refuses root) with data checksums, its Unix socket in the
# scratch directory, a free port on 127.0.0.1, and
#   archive_command = '<scratch>/bin/pgark wal-push %p'
# with PGARK_REPO=<scratch>/repo (a local repository) in the server's
# environment. The examples run as that user too, with a clean environment
# in which they read naturally: `pgark` and PostgreSQL's programs on PATH,
# PGARK_REPO, PGDATA, PGHOST, PGPORT, PGUSER and PGDATABASE set, HOME (also
# the working directory) in the scratch directory. State carries over from
# one example to the next (a backup made in one chapter is there in the
# next). A chapter may have a preamble (below): for the object stores, the
# local emulators the test suite uses (moto, fake-gcs-server, Azurite) are
# started and their endpoints put in the environment.
#
# A failing block stops the test with its file, line, the block and its
# output; exit 1. The cluster and the emulators are stopped and the scratch
# directory removed on any exit (PGARK_DOC_TEST_KEEP=1 keeps the directory).
#
# The pgark under test: $PGARK_DOC_TEST_BIN, else the debug binary of
# `cargo build` / `cargo test` ($CARGO_TARGET_DIR/debug/pgark, or
# target/debug/pgark).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started_at=$SECONDS

say() { printf 'doc-test: %s\n' "$*"; }
die() { printf 'doc-test: error: %s\n' "$*" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
case $target_dir in /*) ;; *) target_dir=$ROOT/$target_dir ;; esac
PGARK_BIN=${PGARK_DOC_TEST_BIN:-$target_dir/debug/pgark}
[ -x "$PGARK_BIN" ] || die "no pgark binary at $PGARK_BIN: run cargo build first (or set PGARK_DOC_TEST_BIN)"

PGBIN=${PGARK_TEST_PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    die "no PostgreSQL under /usr/lib/postgresql/*/bin (run .ci/install-deps.sh)"
fi
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=$(command -v python3) || die "python3 is needed"
for tool in curl zstd setsid; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (run .ci/install-deps.sh)"
done

if [ "$#" -gt 0 ]; then
    files=("$@")
else
    files=(README.md)
    for f in docs/*.md; do files+=("$f"); done
fi

# --- Scratch directory, the account, the cleanup ------------------------------

scratch=$(mktemp -d /tmp/pgark-doc-test.XXXXXX)
# The path goes unquoted into postgresql.conf.
[[ $scratch =~ ^[A-Za-z0-9._/-]+$ ]] || die "unexpected scratch path $scratch"
chmod 755 "$scratch"
data=$scratch/data
repo=$scratch/repo
sock=$scratch/run
work=$scratch/home
mkdir -p "$scratch/bin" "$sock" "$work" "$scratch/tmp" \
    "$scratch/blocks" "$scratch/emulators"
install -m 0755 "$PGARK_BIN" "$scratch/bin/pgark"

if [ "$(id -u)" -eq 0 ]; then
    pguser=${PGARK_TEST_PGUSER:-postgres}
    getent passwd "$pguser" >/dev/null || die "no $pguser user (.ci/install-deps.sh creates it)"
    as_pg() { runuser -u "$pguser" -- "$@"; }
else
    pguser=$(id -un)
    as_pg() { "$@"; }
fi

port=
started=
block_failed=
block_pid=
emulator_pids=()
cleanup() {
    local rc=$?
    set +e
    # An example still running (interrupted): its whole session.
    if [ -n "$block_pid" ]; then
        kill -TERM -- "-$block_pid" 2>/dev/null
        sleep 1
        kill -KILL -- "-$block_pid" 2>/dev/null
    fi
    if [ -n "$started" ]; then
        (cd "$scratch" && as_pg "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop) >/dev/null 2>&1
    fi
    # The emulators keep nothing (memory, or the scratch directory): no need
    # to wait for a graceful shutdown (Azurite's takes 20 s).
    for pid in "${emulator_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$rc" -ne 0 ] && [ -z "$block_failed" ] && [ -f "$scratch/server.log" ]; then
        printf 'doc-test: the end of the server log:\n' >&2
        tail -n 15 "$scratch/server.log" | sed 's/^/  | /' >&2
    fi
    if [ "${PGARK_DOC_TEST_KEEP:-}" = 1 ]; then
        say "scratch directory kept: $scratch"
    else
        rm -rf "$scratch"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p"; then echo "$p"; return 0; fi
    done
    return 1
}

# The environment every example (and the server) gets, and nothing else.
base_env=(
    "HOME=$scratch/home"
    "PATH=$scratch/bin:$PGBIN:/usr/local/bin:/usr/bin:/bin"
    "LANG=C.UTF-8"
    "TMPDIR=$scratch/tmp"
    "PGARK_REPO=$repo"
    "PGDATA=$data"
    "PGHOST=$sock"
    "PGUSER=postgres"
    "PGDATABASE=postgres"
)

# --- Extracting the blocks -------------------------------------------------------

# extract FILE DIR: writes DIR/NNN.sh for each block to run (first line: a
# comment with the line number), DIR/norun (line: first command of each
# sh-norun block), and the file= blocks into the working directory.
extract() {
    "$PYTHON" - "$1" "$2" "$work" <<'EOF'
import os, re, sys
path, out, work = sys.argv[1:]
RUN, NORUN = {"sh"}, {"sh-norun"}
OTHER = {"console", "text", "conf", "ini", "toml", "yaml", "sql"}
lines = open(path, encoding="utf-8").read().split("\n")
errors, n, norun, i = [], 0, [], 0
while i < len(lines):
    m = re.match(r"^(\s*)(```+|~~~+)(.*)$", lines[i])
    if not m:
        i += 1
        continue
    indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
    start = i + 1
    body = []
    i += 1
    while i < len(lines) and not re.match(r"^\s*" + re.escape(fence[0]) + "{%d,}\s*$" % len(fence), lines[i]):
        body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
        i += 1
    if i == len(lines):
        errors.append(f"{path}:{start}: the block is not closed")
        break
    i += 1
    words = info.split()
    lang = words[0] if words else ""
    attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    text = "\n".join(body) + "\n"
    if lang in RUN:
        n += 1
        with open(os.path.join(out, "%03d.sh" % n), "w") as f:
            f.write(f"# {path}:{start}\n" + text)
    elif lang in NORUN:
        first = next((l for l in body if l.strip() and not l.lstrip().startswith("#")), "")
        norun.append(f"{path}:{start}: {first.strip()}")
    elif lang in OTHER:
        if lang == "yaml":
            import yaml
            try:
                list(yaml.safe_load_all(text))
            except yaml.YAMLError as e:
                errors.append(f"{path}:{start}: the yaml block does not parse: {e}")
        if "file" in attrs:
            name = attrs["file"]
            if name.startswith("/") or ".." in name.split("/"):
                errors.append(f"{path}:{start}: file={name} must be a relative path")
            else:
                with open(os.path.join(work, name), "w") as f:
                    f.write(text)
    elif not lang:
        errors.append(f"{path}:{start}: a fenced block without an info string (sh, sh-norun, console, text, conf, ini, toml, yaml, sql)")
    else:
        errors.append(f"{path}:{start}: unknown info string {lang!r} (sh, sh-norun, console, text, conf, ini, toml, yaml, sql)")
with open(os.path.join(out, "norun"), "w") as f:
    f.write("".join(l + "\n" for l in norun))
for e in errors:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

# check_links FILE...: every relative link names a file that exists and, with
# #anchor, a heading of that file (GitHub's anchors: lower case, spaces to
# dashes, punctuation dropped). Links inside code are not links.
check_links() {
    "$PYTHON" - "$@" <<'EOF'
import os, re, sys
def anchors(path):
    out, fence = set(), None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            fence = None if fence else m.group(1)[0]
            continue
        h = None if fence else re.match(r"^#{1,6} (.*)", line)
        if h:
            out.add(re.sub(r"[^\w\- ]", "", h.group(1).strip().lower()).replace(" ", "-"))
    return out
bad = 0
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"(?ms)^\s*(```+|~~~+).*?^\s*\1\s*$", "", text)   # fenced blocks
    text = re.sub(r"`[^`\n]*`", "", text)                           # code spans
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            print(f"{path}: link to {target}: {dest} does not exist", file=sys.stderr)
            bad += 1
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            print(f"{path}: link to {target}: no heading #{anchor} in {dest}", file=sys.stderr)
            bad += 1
sys.exit(1 if bad else 0)
EOF
}
check_links "${files[@]}" || die "broken links (above)"

# Every file's blocks first: a malformed one fails before anything starts.
blockdir() { echo "$scratch/blocks/$(echo "$1" | tr / _)"; }
for file in "${files[@]}"; do
    [ -f "$file" ] || die "no such file: $file"
    mkdir -p "$(blockdir "$file")"
    extract "$file" "$(blockdir "$file")" || die "$file: malformed blocks (above)"
done

# --- The cluster ---------------------------------------------------------------

chown -R "$pguser" "$scratch" 2>/dev/null || true
say "pgark under test: $PGARK_BIN ($("$PGARK_BIN" --version 2>/dev/null | head -n 1))"
say "initdb (PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), as $pguser) in $data"
(cd "$scratch" && as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust --data-checksums \
    --encoding=UTF8 --locale=C --no-sync) >"$scratch/initdb.log" 2>&1 ||
    { cat "$scratch/initdb.log" >&2; die "initdb failed"; }
cat >>"$data/postgresql.conf" <<EOF

# --- scripts/doc-test.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
archive_mode = on
archive_command = '$scratch/bin/pgark wal-push %p'
fsync = off
EOF
for _ in 1 2 3 4 5; do
    port=$(free_port) || die "no free port"
    echo "port = $port" >>"$data/postgresql.conf"
    if (cd "$scratch" && as_pg env -i "${base_env[@]}" "$PGBIN/pg_ctl" -D "$data" \
        -l "$scratch/server.log" -w -t 60 start) >/dev/null 2>&1; then
        started=1
        break
    fi
    grep -q 'could not bind\|Address already in use' "$scratch/server.log" || die "the server did not start"
done
[ -n "$started" ] || die "no free port found for the server"
base_env+=("PGPORT=$port")

psql_1() { (cd "$scratch" && as_pg env -i "${base_env[@]}" psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"); }

# Some WAL, archived, before the first example.
(cd "$scratch" && as_pg env -i "${base_env[@]}" pgbench -i -s 1 -q) >/dev/null 2>&1 || die "pgbench -i failed"
last=$(psql_1 'select pg_walfile_name(pg_switch_wal())')
for _ in $(seq 300); do
    archived=$(psql_1 "select coalesce(last_archived_wal, '') from pg_stat_archiver")
    if [ -n "$archived" ] && [[ ! $archived < $last ]]; then break; fi
    sleep 0.2
done
if [ -z "$archived" ] || [[ $archived < $last ]]; then
    die "$last was not archived within 60 s: $(psql_1 'select * from pg_stat_archiver')"
fi
say "cluster on port $port, socket $sock, archiving into $repo (up to $archived)"

# --- Emulators (for the object stores chapter) -----------------------------------

# wait_http PORT PATH: until something answers on 127.0.0.1:PORT (30 s).
wait_http() {
    for _ in $(seq 300); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1$2" && return 0
        sleep 0.1
    done
    return 1
}

# fixed_port PORT NAME: the examples name the emulator's usual port.
fixed_port() {
    port_free "$1" || die "port $1 (the usual port of $2, which the examples name) is in use"
}

launch_moto() {
    local prog=${PGARK_MOTO_SERVER:-/opt/pgark-test/moto/bin/moto_server}
    [ -x "$prog" ] || die "moto is not installed ($prog; run .ci/install-deps.sh)"
    moto_port=$(free_port)
    (cd "$scratch/emulators" && exec "$prog" -H 127.0.0.1 -p "$moto_port") >"$scratch/emulators/moto.log" 2>&1 &
    emulator_pids+=("$!")
}
ready_moto() {
    wait_http "$moto_port" / || die "moto did not answer on port $moto_port: $(tail -n 5 "$scratch/emulators/moto.log")"
    curl -sf -X PUT "http://127.0.0.1:$moto_port/pg-backups" >/dev/null || die "cannot create the moto bucket"
    moto_endpoint=http://127.0.0.1:$moto_port
}

launch_fake_gcs() {
    local prog=${PGARK_FAKE_GCS_SERVER:-/opt/pgark-test/fake-gcs/bin/fake-gcs-server} p=4443
    [ -x "$prog" ] || die "fake-gcs-server is not installed ($prog; run .ci/install-deps.sh)"
    fixed_port "$p" fake-gcs-server
    mkdir -p "$scratch/emulators/gcs"
    (cd "$scratch/emulators" && exec "$prog" -scheme http -host 127.0.0.1 -port "$p" -backend memory \
        -external-url "http://127.0.0.1:$p" -public-host "127.0.0.1:$p" -log-level warn \
        -filesystem-root "$scratch/emulators/gcs") >"$scratch/emulators/gcs.log" 2>&1 &
    emulator_pids+=("$!")
}
ready_fake_gcs() {
    local p=4443
    wait_http "$p" /storage/v1/b || die "fake-gcs-server did not answer: $(tail -n 5 "$scratch/emulators/gcs.log")"
    curl -sf -X POST -H 'Content-Type: application/json' -d '{"name":"pg-backups"}' \
        "http://127.0.0.1:$p/storage/v1/b" >/dev/null || die "cannot create the GCS bucket"
}

# Azurite's well-known development account and key (public, from its
# documentation).
AZURITE_ACCOUNT=devstoreaccount1
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
launch_azurite() {
    local prog=${PGARK_AZURITE:-/opt/pgark-test/azurite/node_modules/.bin/azurite-blob} p=10000
    [ -x "$prog" ] || die "Azurite is not installed ($prog; run .ci/install-deps.sh)"
    fixed_port "$p" Azurite
    (cd "$scratch/emulators" && exec "$prog" --blobHost 127.0.0.1 --blobPort "$p" --inMemoryPersistence \
        --skipApiVersionCheck --disableProductStyleUrl) >"$scratch/emulators/azurite.log" 2>&1 &
    emulator_pids+=("$!")
}
ready_azurite() {
    local p=10000
    for _ in $(seq 600); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$p/$AZURITE_ACCOUNT?comp=list" && break
        sleep 0.1
    done
    # Create the container with a Shared Key request.
    "$PYTHON" - "$p" "$AZURITE_ACCOUNT" "$AZURITE_KEY" test <<'EOF' || die "cannot create the Azurite container: $(tail -n 5 "$scratch/emulators/azurite.log")"
import base64, hashlib, hmac, http.client, sys
from email.utils import formatdate
port, account, key, container = sys.argv[1:]
date, version = formatdate(usegmt=True), "2021-08-06"
resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
conn.request("PUT", f"/{account}/{container}?restype=container", body=b"",
             headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
r = conn.getresponse()
if r.status != 201:
    sys.exit(f"HTTP {r.status}: {r.read().decode(errors='replace')}")
EOF
}

# Started now, ready by the time their chapter comes (Azurite takes a while).
for file in "${files[@]}"; do
    if [ "$file" = docs/06-object-stores.md ]; then
        launch_moto
        launch_fake_gcs
        launch_azurite
    fi
done

# --- Per-chapter preambles -------------------------------------------------------
#
# prepare FILE: what the host does before FILE's examples (as the invoking
# user); writes FILE's environment preamble, sourced by each of its blocks.
prepare() {
    local file=$1 pre=$2
    : >"$pre"
    case $file in
    docs/04-verifying-and-monitoring.md)
        fixed_port 9187 "pgark exporter"
        # What the restore test's checks.sql (in the chapter) reads.
        psql_1 'create database app' >/dev/null
        (cd "$scratch" && as_pg env -i "${base_env[@]}" psql -X -q -v ON_ERROR_STOP=1 -d app -c \
            "create table orders (id int primary key, created_at timestamptz default now());
             insert into orders (id) select generate_series(1, 100)") >/dev/null
        ;;
    docs/06-object-stores.md)
        ready_moto
        ready_fake_gcs
        ready_azurite
        cat >"$pre" <<EOF
# The emulators of the test suite stand in for the clouds.
export PGARK_S3_ENDPOINT=$moto_endpoint AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export STORAGE_EMULATOR_HOST=127.0.0.1:4443
export PGARK_AZURE_ENDPOINT=http://127.0.0.1:10000/$AZURITE_ACCOUNT
# The scratch cluster archives into the local repository, not into these:
# a backup there does not wait for its WAL.
export PGARK_ARCHIVE_TIMEOUT=0
EOF
        ;;
    docs/07-encryption.md)
        # Encryption needs a new repository; the cluster archives elsewhere.
        echo 'export PGARK_ARCHIVE_TIMEOUT=0' >"$pre"
        ;;
    esac
}

# --- Running them ------------------------------------------------------------------

ran=0
norun_total=0
norun_list=()
for file in "${files[@]}"; do
    dir=$(blockdir "$file")
    mapfile -t norun <"$dir/norun"
    norun_total=$((norun_total + ${#norun[@]}))
    norun_list+=("${norun[@]}")
    blocks=("$dir"/[0-9]*.sh)
    [ -e "${blocks[0]}" ] || { say "$file: no examples to run, ${#norun[@]} sh-norun"; continue; }
    prepare "$file" "$dir/preamble.sh"
    t0=$SECONDS
    for block in "${blocks[@]}"; do
        where=$(head -n 1 "$block" | sed 's/^# //')
        chmod 644 "$block" "$dir/preamble.sh"
        chmod 755 "$dir" "$scratch/blocks"
        out=${block%.sh}.out
        if [ "$(id -u)" -eq 0 ]; then
            runner=(runuser -u "$pguser" --)
        else
            runner=()
        fi
        set +e
        # Its own session, so that whatever it leaves running ends with it.
        (cd "$work" && exec setsid timeout 120 "${runner[@]}" env -i "${base_env[@]}" \
            bash --noprofile --norc -c '
                set -euo pipefail
                . "$1"
                trap '"'"'echo "doc-test: the command at $3:$(($4 + LINENO - 1)) failed (exit $?)" >&2'"'"' ERR
                . "$2"' doc-test "$dir/preamble.sh" "$block" "$file" "${where##*:}") \
            >"$out" 2>&1 </dev/null &
        block_pid=$!
        wait "$block_pid"
        rc=$?
        set -e
        kill -KILL -- "-$block_pid" 2>/dev/null || true
        block_pid=
        if [ "$rc" -ne 0 ]; then
            block_failed=1
            {
                printf '\ndoc-test: FAILED: %s (exit %s%s)\n' "$where" "$rc" "$([ "$rc" -eq 124 ] && echo ', timed out after 120 s')"
                printf -- '--- the block:\n'
                tail -n +2 "$block" | sed 's/^/  | /'
                printf -- '--- its output:\n'
                tail -n 40 "$out" | sed 's/^/  | /'
            } >&2
            exit 1
        fi
        ran=$((ran + 1))
    done
    say "$file: ${#blocks[@]} examples passed in $((SECONDS - t0)) s, ${#norun[@]} sh-norun"
done

say "sh-norun blocks (not run): $norun_total"
for l in "${norun_list[@]}"; do printf '  %s\n' "$l"; done
say "all $ran examples passed in $((SECONDS - started_at)) s"
