#!/usr/bin/env bash
# Throwaway PostgreSQL and RabbitMQ for the test suite and the benchmarks.
#
#   scripts/services.sh install                 apt-get install what is missing (root)
#   scripts/services.sh start DIR               start both on free loopback ports, write DIR/env
#   scripts/services.sh stop DIR                stop both (idempotent)
#   scripts/services.sh restart-rabbit DIR      stop + start on the same ports and data
#   scripts/services.sh restart-postgres DIR    stop + start on the same ports and data
#   scripts/services.sh stop-rabbit|start-rabbit|stop-postgres|start-postgres DIR
#   scripts/services.sh kill-rabbit|kill-postgres DIR   SIGKILL, no restart (crash tests)
#   scripts/services.sh vhost DIR NAME          add a vhost with full rights for guest
#
# DIR/env holds shell assignments:
#   TIDINGS_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/postgres
#   TIDINGS_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/
#   TIDINGS_TEST_SERVICES_DIR=DIR
# Nothing here touches a system-wide service: every file, port and node name is private to DIR.
set -euo pipefail

readonly WAIT_SECONDS=${TIDINGS_SERVICES_WAIT:-150}

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

pg_bin() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $initdb ]] || die "PostgreSQL is not installed (run: scripts/services.sh install)"
    dirname "$initdb"
}

rabbit_bin() {
    # The Debian wrapper in /usr/sbin insists on switching to the rabbitmq user; the real scripts
    # live here and run as whoever calls them, which keeps every file inside DIR.
    local dir=/usr/lib/rabbitmq/bin
    [[ -x $dir/rabbitmq-server ]] || die "RabbitMQ is not installed (run: scripts/services.sh install)"
    echo "$dir"
}

free_port() {
    # Ask the kernel for a free port; the tiny race until the server binds is acceptable here.
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True if PID runs. A zombie does not count: in a container whose init never reaps, a killed
# daemon stays a zombie and `kill -0` would still succeed on it.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 what=$2 deadline=$((SECONDS + WAIT_SECONDS))
    until port_open "$port"; do
        ((SECONDS < deadline)) || die "$what did not open port $port within ${WAIT_SECONDS}s"
        sleep 0.2
    done
}

cmd_install() {
    local missing=()
    command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] ||
        missing+=(rabbitmq-server)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    if ((${#missing[@]} == 0)); then
        log "already installed: rabbitmq-server postgresql"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "need root to install: ${missing[*]}"
    # Packages must not start system-wide daemons: a policy-rc.d that answers 101 ("action
    # forbidden") makes invoke-rc.d skip every start during this install.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    # The cluster postgresql-common would create is never used: skip it to save time and disk.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/tidings.conf
    local started=$SECONDS rc=0
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get update -qq &&
            apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >&2 || rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed ($rc)"
    # Belt and braces: if a system node or epmd came up anyway, stop it so its ports are free.
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    fi
    pkill -u rabbitmq -x beam.smp >/dev/null 2>&1 || true
    log "installed ${missing[*]} in $((SECONDS - started))s"
}

# ---------------------------------------------------------------- PostgreSQL

# Run a command as the owner of the cluster: postgres refuses to run as root.
as_pg() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_setup() {
    local dir=$1 root
    root=$dir/pg
    mkdir -p "$root"
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$root"
        # A private temp dir (mode 0700, e.g. pytest's) is not reachable for the postgres user:
        # fall back to a directory of its own and remember where it is.
        if ! runuser -u postgres -- test -w "$root"; then
            rmdir "$root"
            root=$(mktemp -d /tmp/tidings-pg.XXXXXX)
            chown postgres: "$root"
            ln -s "$root" "$dir/pg"
        fi
    fi
    local port bin
    port=$(free_port)
    bin=$(pg_bin)
    as_pg "$bin/initdb" -D "$root/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 --no-sync >"$dir/pg-initdb.log" 2>&1 ||
        { cat "$dir/pg-initdb.log" >&2; die "initdb failed"; }
    cat >>"$root/data/postgresql.conf" <<EOF

# tidings test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$root'
max_connections = 300
logging_collector = off
EOF
    echo "$port" >"$dir/pg.port"
}

pg_start() {
    local dir=$1 root bin port
    root=$(readlink -f "$dir/pg")
    bin=$(pg_bin)
    port=$(cat "$dir/pg.port")
    local pid
    pid=$(head -n 1 "$root/data/postmaster.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && alive "$pid"; then
        log "postgres already running on $port"
        return 0
    fi
    # After a crash the lock files name a dead (or zombie) postmaster, which postgres itself
    # would take for a live one: they are stale, remove them.
    rm -f "$root/data/postmaster.pid" "$root/.s.PGSQL.$port.lock"
    as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t "$WAIT_SECONDS" start \
        </dev/null >/dev/null 2>&1 || { tail -n 30 "$root/server.log" >&2; die "postgres did not start"; }
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        ((SECONDS < deadline)) || die "postgres is not ready on $port"
        sleep 0.2
    done
}

pg_stop() {
    local dir=$1 mode=${2:-fast} root bin
    [[ -e $dir/pg ]] || return 0
    root=$(readlink -f "$dir/pg")
    [[ -d $root/data ]] || return 0
    bin=$(pg_bin)
    if [[ $mode == kill ]]; then
        local pid
        pid=$(head -n 1 "$root/data/postmaster.pid" 2>/dev/null || true)
        [[ -n $pid ]] || return 0
        # Backends would keep the shared memory and port: end them too, by parent pid.
        kill -KILL "$pid" 2>/dev/null || true
        pkill -KILL -P "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while alive "$pid" || pgrep -P "$pid" >/dev/null; do
            ((SECONDS < deadline)) || break
            sleep 0.05
        done
        return 0
    fi
    as_pg "$bin/pg_ctl" -D "$root/data" status >/dev/null 2>&1 || return 0
    as_pg "$bin/pg_ctl" -D "$root/data" -m "$mode" -w -t "$WAIT_SECONDS" stop >/dev/null 2>&1 ||
        as_pg "$bin/pg_ctl" -D "$root/data" -m immediate -w stop >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- RabbitMQ

rabbit_setup() {
    local dir=$1 base
    base=$dir/rabbit
    mkdir -p "$base/home" "$base/mnesia" "$base/log"
    local amqp dist epmd node
    amqp=$(free_port)
    dist=$(free_port)
    epmd=$(free_port)
    node="tidings-$amqp-$$@localhost"
    cat >"$base/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp
loopback_users.guest = true
log.console = false
log.file.level = info
disk_free_limit.absolute = 50MB
EOF
    : >"$base/rabbitmq-env.conf"
    echo '[].' >"$base/enabled_plugins"
    # Every path, port and name the node uses, so the start/stop/ctl calls all agree.
    cat >"$base/env.sh" <<EOF
export HOME='$base/home'
export RABBITMQ_NODENAME='$node'
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$amqp
export RABBITMQ_DIST_PORT=$dist
export ERL_EPMD_PORT=$epmd
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
export RABBITMQ_CONF_ENV_FILE='$base/rabbitmq-env.conf'
export RABBITMQ_CONFIG_FILE='$base/rabbitmq.conf'
export RABBITMQ_ADVANCED_CONFIG_FILE='$base/advanced.config'
export RABBITMQ_ENABLED_PLUGINS_FILE='$base/enabled_plugins'
export RABBITMQ_MNESIA_BASE='$base/mnesia'
export RABBITMQ_LOG_BASE='$base/log'
export RABBITMQ_PID_FILE='$base/rabbit.pid'
export RABBITMQ_PLUGINS_EXPAND_DIR='$base/plugins-expand'
EOF
}

rabbit_env() {
    # shellcheck disable=SC1091
    source "$1/rabbit/env.sh"
}

rabbit_start() {
    local dir=$1 bin
    bin=$(rabbit_bin)
    (
        rabbit_env "$dir"
        if port_open "$RABBITMQ_NODE_PORT"; then
            log "rabbitmq already running on $RABBITMQ_NODE_PORT"
            exit 0
        fi
        # setsid + redirected fds: the node outlives this script and holds none of the caller's
        # pipes open (subprocess.run would otherwise wait for it).
        setsid "$bin/rabbitmq-server" </dev/null >>"$dir/rabbit/log/stdout.log" 2>&1 &
        echo $! >"$dir/rabbit/server.pid"
        local deadline=$((SECONDS + WAIT_SECONDS))
        until port_open "$RABBITMQ_NODE_PORT"; do
            if ! alive "$(cat "$dir/rabbit/server.pid")"; then
                tail -n 30 "$dir/rabbit/log/stdout.log" >&2
                die "rabbitmq exited during start"
            fi
            ((SECONDS < deadline)) || die "rabbitmq did not open port $RABBITMQ_NODE_PORT"
            sleep 0.2
        done
        # The AMQP listener opens after the boot steps (queues recovered), so an open port means
        # ready; await_startup double-checks without a long extra wait.
        "$bin/rabbitmqctl" -q await_startup --timeout "$WAIT_SECONDS" >/dev/null 2>&1 || true
    )
}

beam_pid() {
    local dir=$1 pid
    pid=$(cat "$dir/rabbit/rabbit.pid" 2>/dev/null || true)
    [[ -n $pid ]] && alive "$pid" && echo "$pid"
    return 0
}

rabbit_stop() {
    local dir=$1 mode=${2:-graceful} bin pid
    [[ -f $dir/rabbit/env.sh ]] || return 0
    bin=$(rabbit_bin)
    pid=$(beam_pid "$dir")
    local wrapper
    wrapper=$(cat "$dir/rabbit/server.pid" 2>/dev/null || true)
    # A node still booting has not written its pid file yet: it is the wrapper's child.
    [[ -z $pid && -n $wrapper ]] && pid=$(pgrep -P "$wrapper" -x beam.smp | head -n 1 || true)
    if [[ -n $pid ]]; then
        if [[ $mode == kill ]]; then
            kill -KILL "$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
        local deadline=$((SECONDS + WAIT_SECONDS))
        while alive "$pid"; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    # The wrapper shell goes with it.
    [[ -n $wrapper ]] && kill -KILL "$wrapper" 2>/dev/null || true
    rm -f "$dir/rabbit/rabbit.pid"
}

epmd_stop() {
    local dir=$1
    [[ -f $dir/rabbit/env.sh ]] || return 0
    (
        rabbit_env "$dir"
        local epmd
        epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n 1 || true)
        [[ -n $epmd ]] && "$epmd" -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
    )
}

cmd_vhost() {
    local dir=$1 name=$2 bin
    bin=$(rabbit_bin)
    (
        rabbit_env "$dir"
        "$bin/rabbitmqctl" -q add_vhost "$name" >/dev/null
        "$bin/rabbitmqctl" -q set_permissions -p "$name" guest '.*' '.*' '.*' >/dev/null
    )
}

# ---------------------------------------------------------------- commands

write_env() {
    local dir=$1 amqp
    amqp=$(
        rabbit_env "$dir"
        echo "$RABBITMQ_NODE_PORT"
    )
    cat >"$dir/env" <<EOF
TIDINGS_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$(cat "$dir/pg.port")/postgres
TIDINGS_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp/
TIDINGS_TEST_SERVICES_DIR=$dir
EOF
}

cmd_start() {
    local dir=$1 started=$SECONDS
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [[ -e $dir/pg.port ]] || pg_setup "$dir"
    [[ -f $dir/rabbit/env.sh ]] || rabbit_setup "$dir"
    # Boot the slow Erlang node while Postgres starts.
    rabbit_start "$dir" &
    local rabbit=$!
    pg_start "$dir" || {
        wait "$rabbit" || true
        cmd_stop "$dir"
        die "postgres failed"
    }
    wait "$rabbit" || {
        cmd_stop "$dir"
        die "rabbitmq failed"
    }
    write_env "$dir"
    log "ready in $((SECONDS - started))s: $(tr '\n' ' ' <"$dir/env")"
    cat "$dir/env"
}

cmd_stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    rabbit_stop "$dir" &
    local rabbit=$!
    pg_stop "$dir" fast
    wait "$rabbit" || true
    epmd_stop "$dir"
    # A data dir outside DIR (see pg_setup) is ours alone: remove it with the cluster.
    if [[ -L $dir/pg ]]; then
        local target
        target=$(readlink -f "$dir/pg")
        [[ $target == /tmp/tidings-pg.* ]] && rm -rf "$target"
        rm -f "$dir/pg" "$dir/pg.port"
    fi
}

require_dir() {
    [[ -n ${1:-} ]] || die "usage: services.sh $2 DIR"
    [[ $2 == start ]] && mkdir -p "$1"
    [[ -f $1/env || $2 == start ]] || die "$1 holds no started services"
    cd "$1" && pwd
}

main() {
    local cmd=${1:-} dir
    case $cmd in
    install) cmd_install ;;
    start) dir=$(require_dir "${2:-}" start) || exit 1; cmd_start "$dir" ;;
    stop) [[ -d ${2:-/nonexistent} ]] && cmd_stop "$2" ;;
    restart-rabbit) dir=$(require_dir "${2:-}" "$cmd") || exit 1; rabbit_stop "$dir"; rabbit_start "$dir" ;;
    restart-postgres) dir=$(require_dir "${2:-}" "$cmd") || exit 1; pg_stop "$dir" fast; pg_start "$dir" ;;
    stop-rabbit) dir=$(require_dir "${2:-}" "$cmd") || exit 1; rabbit_stop "$dir" ;;
    start-rabbit) dir=$(require_dir "${2:-}" "$cmd") || exit 1; rabbit_start "$dir" ;;
    kill-rabbit) dir=$(require_dir "${2:-}" "$cmd") || exit 1; rabbit_stop "$dir" kill ;;
    stop-postgres) dir=$(require_dir "${2:-}" "$cmd") || exit 1; pg_stop "$dir" fast ;;
    start-postgres) dir=$(require_dir "${2:-}" "$cmd") || exit 1; pg_start "$dir" ;;
    kill-postgres) dir=$(require_dir "${2:-}" "$cmd") || exit 1; pg_stop "$dir" kill ;;
    vhost)
        dir=$(require_dir "${2:-}" "$cmd") || exit 1
        [[ -n ${3:-} ]] || die "usage: services.sh vhost DIR NAME"
        cmd_vhost "$dir" "$3"
        ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
    esac
}

main "$@"
