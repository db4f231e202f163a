#!/usr/bin/env bash
# A two-node Ray cluster on this machine (a head and one worker node), token auth on.
#
#   cluster/local.sh start    start both nodes; prints the address and how to submit
#   cluster/local.sh stop     stop both nodes (only these: other Ray instances are left alone)
#   cluster/local.sh status   `ray status` against the head
#
# Settings (environment): SEREMO_CLUSTER_DIR (state, logs, token; default /tmp/seremo-cluster),
# SEREMO_GCS_PORT (6390; the nodes' other ports are GCS+100 to GCS+115), SEREMO_DASHBOARD_PORT (8270), SEREMO_HEAD_CPUS (1), SEREMO_WORKER_CPUS (1),
# RAY_AUTH_TOKEN (default: a fresh random token, kept in $SEREMO_CLUSTER_DIR/token).
#
# Each node runs `ray start --block` in its own session, so `stop` ends exactly the
# processes of this cluster (`ray stop` would end every Ray process on the machine).
set -euo pipefail

DIR=${SEREMO_CLUSTER_DIR:-/tmp/seremo-cluster}
GCS_PORT=${SEREMO_GCS_PORT:-6390}
DASH_PORT=${SEREMO_DASHBOARD_PORT:-8270}
HEAD_CPUS=${SEREMO_HEAD_CPUS:-1}
WORKER_CPUS=${SEREMO_WORKER_CPUS:-1}
RAY=${RAY:-ray}

start_node() {  # name, port offset, then `ray start` arguments
    local name=$1 base=$((GCS_PORT + 100 + $2)); shift 2
    # Fixed per-node ports: two nodes (and any other Ray) on one machine must not share an agent port.
    setsid "$RAY" start --block --disable-usage-stats \
        --dashboard-agent-listen-port $base --dashboard-agent-grpc-port $((base + 1)) \
        --runtime-env-agent-port $((base + 2)) --metrics-export-port $((base + 3)) \
        --node-manager-port $((base + 4)) --object-manager-port $((base + 5)) \
        "$@" >"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

wait_for_nodes() {  # count: wait until the cluster has that many live nodes
    for _ in $(seq 1 90); do
        alive=$(python - "$GCS_PORT" 2>/dev/null <<'PY' || echo 0
import sys, ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
)
        [ "${alive:-0}" -ge "$1" ] && return 0
        sleep 1
    done
    echo "cluster/local.sh: the cluster did not reach $1 node(s); logs: $DIR/*.log" >&2
    return 1
}

case "${1:-}" in
start)
    if [ -f "$DIR/head.pid" ] && kill -0 "$(cat "$DIR/head.pid")" 2>/dev/null; then
        echo "cluster/local.sh: already running (pid $(cat "$DIR/head.pid")); stop it first" >&2; exit 1
    fi
    mkdir -p "$DIR"
    if [ -z "${RAY_AUTH_TOKEN:-}" ]; then
        python -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/token"
        RAY_AUTH_TOKEN=$(cat "$DIR/token")
    else
        printf '%s\n' "$RAY_AUTH_TOKEN" >"$DIR/token"
    fi
    chmod 600 "$DIR/token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
    start_node head 0 --head --port "$GCS_PORT" --ray-client-server-port $((GCS_PORT + 1)) --dashboard-host 127.0.0.1 --dashboard-port "$DASH_PORT" \
        --num-cpus "$HEAD_CPUS" --num-gpus 0 --temp-dir "$DIR/ray" --include-dashboard true
    wait_for_nodes 1
    # Its own temp dir: nodes sharing one would garbage-collect each other's job working dirs.
    start_node worker 10 --address "127.0.0.1:$GCS_PORT" --num-cpus "$WORKER_CPUS" --num-gpus 0 --temp-dir "$DIR/ray-worker"
    wait_for_nodes 2
    cat <<MSG
two-node Ray cluster up: head 127.0.0.1:$GCS_PORT, dashboard http://127.0.0.1:$DASH_PORT
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=\$(cat $DIR/token)
  seremo submit CONFIG --address http://127.0.0.1:$DASH_PORT --out /absolute/out --data-root /absolute/corpora
  cluster/local.sh stop
MSG
    ;;
stop)
    for name in worker head; do
        if [ -f "$DIR/$name.pid" ]; then
            pid=$(cat "$DIR/$name.pid")
            kill -TERM -- "-$pid" 2>/dev/null || true   # the node's whole session
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            kill -KILL -- "-$pid" 2>/dev/null || true
            rm -f "$DIR/$name.pid"
        fi
    done
    echo "cluster/local.sh: stopped"
    ;;
status)
    RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(cat "$DIR/token") "$RAY" status --address "127.0.0.1:$GCS_PORT"
    ;;
*)
    echo "usage: cluster/local.sh start|stop|status" >&2; exit 2
    ;;
esac
