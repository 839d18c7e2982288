#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 machine, and nothing
# more: a PostgreSQL server (initdb, pg_ctl, postgres, psql, pgbench,
# pg_basebackup, ...), the zstd/lz4/xz command-line tools the tests use to
# restore archived files by hand, and the unprivileged `postgres` account
# the tests run PostgreSQL as when they run as root.
#
# Idempotent: what is already there is left alone, and `apt-get update` only
# runs if something has to be installed. Runs as root (or as a user with
# password-less sudo). Prints what it did.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

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

# --- What is missing -------------------------------------------------------

packages=()
if have_postgres; then
    say "PostgreSQL already installed"
else
    packages+=(postgresql postgresql-contrib)
fi
for tool in zstd:zstd lz4:lz4 xz:xz-utils; do
    cmd=${tool%%:*}
    pkg=${tool#*:}
    if command -v "$cmd" >/dev/null 2>&1; then
        say "$cmd already installed"
    else
        packages+=("$pkg")
    fi
done

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

# --- Report ----------------------------------------------------------------

for bin in /usr/lib/postgresql/*/bin; do
    say "PostgreSQL $("$bin/postgres" --version | sed 's/^postgres (PostgreSQL) //') in $bin"
done
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q .; then
    say "note: distribution-managed clusters exist (the tests do not use them):"
    pg_lsclusters | sed 's/^/install-deps:   /'
fi
say "done"
