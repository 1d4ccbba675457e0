#!/usr/bin/env bash
# A throwaway PostgreSQL for the definitions store's contract tests.
#
#   .ci/postgres.sh install                 install Debian's postgresql if missing
#   .ci/postgres.sh start PORT [DIR] [--no-install] [--stop-with PID]
#       make a new cluster in DIR (default /tmp/amqpd-postgres-PORT), serve it
#       on 127.0.0.1:PORT only, create database amqpd_test, and print its
#       SQLAlchemy URL on stdout (the only thing printed there);
#       --stop-with PID: a detached watcher stops the cluster once PID is
#       gone, so a test run that is killed leaves no server behind
#   .ci/postgres.sh stop PORT [DIR]         stop that cluster and remove DIR
#
# The cluster runs without fsync: it is for tests, never for data.
set -euo pipefail
script=$(readlink -f "$0")

usage() {
    echo "usage: $0 install | start PORT [DIR] [--no-install] | stop PORT [DIR]" >&2
    exit 2
}

bindir() {
    local dirs
    dirs=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V) || true
    [ -n "$dirs" ] && echo "$dirs" | tail -n 1
}

install() {
    if [ -n "$(bindir)" ]; then
        return
    fi
    echo "installing postgresql from Debian" >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
}

# Run a PostgreSQL program as the postgres user (the server refuses root).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local port=$1 dir=$2 bin password
    bin=$(bindir)
    if [ -z "$bin" ]; then
        echo "PostgreSQL is not installed; run: bash $0 install" >&2
        exit 1
    fi
    if [ -d "$dir/data" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        echo "a cluster is already running in $dir; stop it first" >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s\n' "$password" >"$dir/password"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$dir"
    fi
    chmod 700 "$dir"
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-sync \
        --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$dir/password" >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" \
        -o "-c synchronous_commit=off -c full_page_writes=off" \
        start >&2 || {
        cat "$dir/server.log" >&2
        exit 1
    }
    as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -q \
        -c "CREATE DATABASE amqpd_test" >&2
    echo "postgresql+asyncpg://postgres:$password@127.0.0.1:$port/amqpd_test"
}

# Stop the cluster once process $1 has exited (checked every second).
watch() {
    local owner=$1 port=$2 dir=$3
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        exec bash "$2" stop "$3" "$4"
    ' watcher "$owner" "$script" "$port" "$dir" </dev/null >/dev/null 2>&1 &
}

stop() {
    local dir=$2 bin
    bin=$(bindir)
    if [ -n "$bin" ] && [ -d "$dir/data" ]; then
        as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    rm -rf "$dir"
}

command=${1:-}
case $command in
install)
    install
    ;;
start | stop)
    port=${2:-}
    [[ $port =~ ^[0-9]+$ ]] || usage
    dir=/tmp/amqpd-postgres-$port
    no_install=
    owner=
    set -- "${@:3}"
    while [ $# -gt 0 ]; do
        case $1 in
        --no-install) no_install=1 ;;
        --stop-with)
            owner=${2:-}
            [[ $owner =~ ^[0-9]+$ ]] || usage
            shift
            ;;
        -*) usage ;;
        *) dir=$1 ;;
        esac
        shift
    done
    if [ "$command" = start ]; then
        [ -n "$no_install" ] || install
        start "$port" "$dir"
        [ -z "$owner" ] || watch "$owner" "$port" "$dir"
    else
        stop "$port" "$dir"
    fi
    ;;
*)
    usage
    ;;
esac
