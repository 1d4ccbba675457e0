#!/usr/bin/env bash
# Bench amqpd and RabbitMQ side by side on this machine, in one run that
# alternates between them (docs/performance.md).
#
#   tools/side_by_side.sh [--out DIR] [--no-restart] [BENCH ARGS...]
#
# Installs rabbitmq-server from Debian when it is missing (so run it as root),
# starts RabbitMQ on 127.0.0.1:5673 under its own node name, with data and log
# directories owned by the rabbitmq user and no plugins, and amqpd on
# 127.0.0.1:5680 with a fresh data directory. It then runs `amqpd bench` on
# both, passing BENCH ARGS through (none: the full run, about 30 minutes;
# --quick: a few minutes), and stops both brokers by PID when done, on error
# and on Ctrl-C alike. Only brokers (and an epmd) this script started are
# stopped; a port already in use makes it stop before starting anything.
#
# Before each repeat of backlog and many-queues the bench restarts the broker
# it is about to weigh, through this script's --restart-broker mode, so that
# RSS per message and per queue come from a fresh process. --no-restart skips
# that (the memory figures then depend on what earlier scenarios left).
#
# DIR (default /tmp/amqpd-side-by-side-DATE) receives results.jsonl (one JSON
# line per scenario and broker), report.txt (the bench's tables),
# progress.log, table.md (the Markdown table of docs/performance.md),
# machine.txt (machine, versions, load) and logs/ (both brokers' logs).
#
# Settings from the environment: AMQPD_PORT (5680), RABBITMQ_PORT (5673),
# AMQPD_VENV (the checkout's .venv).

set -euo pipefail

SELF=$(readlink -f "$0")
ROOT=$(dirname "$(dirname "$SELF")")

die() {
    echo "side_by_side: $*" >&2
    exit 1
}

say() {
    echo "side_by_side: $*" >&2
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A process counts as running until it is gone or a zombie.
running() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL if it outlives SECONDS.
stop_pid() {
    local pid=$1 limit=$2 waited=0
    running "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while running "$pid"; do
        if [ "$waited" -ge $((limit * 10)) ]; then
            say "process $pid ignored SIGTERM for ${limit} s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# wait_port PORT PID SECONDS: until PORT accepts, or PID dies, or time is up.
wait_port() {
    local port=$1 pid=$2 limit=$3 waited=0
    until port_open "$port"; do
        running "$pid" || return 1
        [ "$waited" -lt $((limit * 10)) ] || return 1
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Prefix that runs a command as the rabbitmq user in place: setpriv and env
# exec, so "${AS_RABBITMQ[@]}" CMD & leaves CMD's own PID in $! (a shell
# function run in the background would leave a subshell's).
AS_RABBITMQ=(
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups --
    env HOME=/var/lib/rabbitmq USER=rabbitmq LOGNAME=rabbitmq
)

start_amqpd() {
    "$VENV/bin/amqpd" --port "$AMQPD_PORT" --bind 127.0.0.1 \
        --data-dir "$AMQPD_DATA" >>"$LOGS/amqpd.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$STATE/amqpd.pid"
    wait_port "$AMQPD_PORT" "$pid" 60 || {
        tail -n 20 "$LOGS/amqpd.log" >&2
        die "amqpd did not start listening on $AMQPD_PORT"
    }
}

start_rabbitmq() {
    local pid_file="$RMQ_BASE/rabbitmq.pid" wrapper waited=0 pid
    rm -f "$pid_file"
    "${AS_RABBITMQ[@]}" \
        RABBITMQ_NODENAME="amqpd-side-by-side@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$RABBITMQ_PORT" \
        RABBITMQ_DIST_PORT="$RABBITMQ_DIST_PORT" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_MNESIA_BASE="$RMQ_BASE/mnesia" \
        RABBITMQ_LOG_BASE="$RMQ_BASE/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_BASE/enabled_plugins" \
        RABBITMQ_PID_FILE="$pid_file" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        /usr/lib/rabbitmq/bin/rabbitmq-server \
        >>"$RMQ_BASE/log/stdout.log" 2>&1 </dev/null &
    wrapper=$!
    # the node writes its own (beam.smp) PID early in its boot
    until [ -s "$pid_file" ]; do
        running "$wrapper" && [ "$waited" -lt 1200 ] || {
            tail -n 20 "$RMQ_BASE/log/stdout.log" >&2
            die "RabbitMQ did not write its PID file"
        }
        sleep 0.1
        waited=$((waited + 1))
    done
    pid=$(cat "$pid_file")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] ||
        die "PID $pid from RabbitMQ's PID file is not beam.smp"
    echo "$pid" >"$STATE/rabbitmq.pid"
    wait_port "$RABBITMQ_PORT" "$pid" 180 || {
        tail -n 20 "$RMQ_BASE/log/stdout.log" >&2
        die "RabbitMQ did not start listening on $RABBITMQ_PORT"
    }
}

stop_broker() {
    local label=$1 pid
    [ -s "$STATE/$label.pid" ] || return 0
    pid=$(cat "$STATE/$label.pid")
    say "stopping $label (PID $pid)"
    if [ "$label" = rabbitmq ]; then
        stop_pid "$pid" 90
    else
        stop_pid "$pid" 30
    fi
    rm -f "$STATE/$label.pid"
}

# --restart-broker LABEL: called by the bench between repeats; prints the
# new PID as its last line. Everything else goes to stderr or the logs, so
# that no broker holds the bench's pipe open.
restart_broker() {
    local label=$1
    [ -n "${SIDE_BY_SIDE_STATE:-}" ] || die "--restart-broker is for the bench"
    # shellcheck source=/dev/null
    . "$SIDE_BY_SIDE_STATE/settings"
    stop_broker "$label" >&2
    case "$label" in
    amqpd) start_amqpd ;;
    rabbitmq)
        # the old node must have left epmd and its port before the new one
        local waited=0
        while port_open "$RABBITMQ_PORT" && [ "$waited" -lt 300 ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        start_rabbitmq
        ;;
    *) die "no broker labelled $label" ;;
    esac
    cat "$STATE/$label.pid"
}

if [ "${1:-}" = --restart-broker ]; then
    restart_broker "${2:?--restart-broker needs a label}"
    exit 0
fi

OUT="/tmp/amqpd-side-by-side-$(date +%Y%m%d-%H%M%S)"
RESTART=1
while [ $# -gt 0 ]; do
    case "$1" in
    --out)
        OUT=${2:?--out needs a directory}
        shift 2
        ;;
    --no-restart)
        RESTART=0
        shift
        ;;
    *) break ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run as root: it installs RabbitMQ and runs it as the rabbitmq user"
AMQPD_PORT=${AMQPD_PORT:-5680}
RABBITMQ_PORT=${RABBITMQ_PORT:-5673}
RABBITMQ_DIST_PORT=$((RABBITMQ_PORT + 20000))
VENV=${AMQPD_VENV:-$ROOT/.venv}
[ -x "$VENV/bin/amqpd" ] || die "no $VENV/bin/amqpd (set AMQPD_VENV)"

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    say "installing rabbitmq-server from Debian"
    # keep the package's service from starting a default node on 5672
    policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    installed=0
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server ||
        installed=$?
    [ "$policy_added" = 0 ] || rm -f /usr/sbin/policy-rc.d
    [ "$installed" = 0 ] || die "installing rabbitmq-server failed"
fi

for port in "$AMQPD_PORT" "$RABBITMQ_PORT" "$RABBITMQ_DIST_PORT"; do
    if port_open "$port"; then
        die "something already listens on 127.0.0.1:$port; stop it or pick other ports"
    fi
done

mkdir -p "$OUT/logs"
OUT=$(readlink -f "$OUT")
LOGS="$OUT/logs"
STATE=$(mktemp -d /tmp/amqpd-sbs-state.XXXXXX)
RMQ_BASE=$(mktemp -d /tmp/amqpd-sbs-rabbitmq.XXXXXX)
AMQPD_DATA=$(mktemp -d /tmp/amqpd-sbs-data.XXXXXX)
EPMD_PID=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_broker amqpd || true
    stop_broker rabbitmq || true
    if [ -n "$EPMD_PID" ]; then
        say "stopping epmd (PID $EPMD_PID)"
        stop_pid "$EPMD_PID" 10 || true
    fi
    cp -r "$RMQ_BASE/log" "$LOGS/rabbitmq" 2>/dev/null || true
    rm -rf "$STATE" "$RMQ_BASE" "$AMQPD_DATA"
    say "results in $OUT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RMQ_BASE/mnesia" "$RMQ_BASE/log"
echo "[]." >"$RMQ_BASE/enabled_plugins"
chown -R rabbitmq:rabbitmq "$RMQ_BASE"
chmod 755 "$RMQ_BASE"
cat >"$STATE/settings" <<EOF
AMQPD_PORT=$AMQPD_PORT
RABBITMQ_PORT=$RABBITMQ_PORT
RABBITMQ_DIST_PORT=$RABBITMQ_DIST_PORT
VENV='$VENV'
LOGS='$LOGS'
STATE='$STATE'
RMQ_BASE='$RMQ_BASE'
AMQPD_DATA='$AMQPD_DATA'
EOF
export SIDE_BY_SIDE_STATE="$STATE"

# Erlang nodes register with epmd; start one we own (on loopback) unless one
# already runs, so that stopping it afterwards harms nobody else's node.
if ! port_open 4369; then
    "${AS_RABBITMQ[@]}" /usr/bin/epmd -address 127.0.0.1 \
        >>"$LOGS/epmd.log" 2>&1 </dev/null &
    EPMD_PID=$!
    wait_port 4369 "$EPMD_PID" 10 || die "epmd did not start"
fi

say "starting RabbitMQ on 127.0.0.1:$RABBITMQ_PORT"
start_rabbitmq
say "starting amqpd on 127.0.0.1:$AMQPD_PORT"
start_amqpd

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cores: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "python: $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')"
    echo "amqpd: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "rabbitmq-server: $(dpkg-query -W -f='${Version}' rabbitmq-server)"
    echo "erlang-base: $(dpkg-query -W -f='${Version}' erlang-base)"
    echo "data filesystem: $(df -T "$AMQPD_DATA" | awk 'NR == 2 {print $2, $1}')"
    echo "bench args: ${*:-(none: full run)}"
    echo "restart before memory scenarios: $([ "$RESTART" = 1 ] && echo yes || echo no)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

bench=(
    "$VENV/bin/amqpd" bench
    --target "amqpd=amqp://guest:guest@127.0.0.1:$AMQPD_PORT/"
    --target-pid "amqpd=$(cat "$STATE/amqpd.pid")"
    --target "rabbitmq=amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/"
    --target-pid "rabbitmq=$(cat "$STATE/rabbitmq.pid")"
    --json "$OUT/results.jsonl"
)
if [ "$RESTART" = 1 ]; then
    bench+=(--restart-command "$(printf '%q' "$SELF") --restart-broker")
fi
say "running: amqpd bench ${*:-(full run)}"
set +e
# tee -i: on Ctrl-C the logs stay open for the bench's last words
"${bench[@]}" "$@" 2> >(tee -i "$OUT/progress.log" >&2) | tee -i "$OUT/report.txt"
status=${PIPESTATUS[0]}
set -e
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

if [ -s "$OUT/results.jsonl" ]; then
    "$VENV/bin/amqpd" bench --markdown \
        --compare "$OUT/results.jsonl@amqpd" "$OUT/results.jsonl@rabbitmq" \
        >"$OUT/table.md" || true
fi
exit "$status"
