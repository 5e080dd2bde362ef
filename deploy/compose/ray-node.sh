#!/bin/sh
# A node of the compose `cluster` profile (docker-compose.yml): `sh /config/ray-node.sh head|worker`.
#
#  head    `ray start --head` with GCS fault tolerance (its state in the GCS Redis at
#          $RAY_REDIS_ADDRESS, password $RAY_GCS_REDIS_PASSWORD, namespace
#          $RAY_external_storage_namespace), no CPU for replicas or training (--num-cpus=0: the
#          head runs the GCS, the Serve controller, a proxy and job drivers only), the
#          dashboard (job submission, `serve deploy`) on the container's loopback only; then
#          deploys $CXRL_SERVE_CONFIG. After a restart the GCS comes back from Redis and the same
#          config deploys as a no-op.
#  worker  `ray start --address=$RAY_HEAD_ADDRESS` with $RAY_NODE_CPUS logical CPUs.
#
# Every node refuses to start without the cluster's Ray token (token auth between nodes: the GCS,
# raylets and workers accept only RPCs that carry it) and the reward API's token. SIGTERM
# (compose stop/down) stops Ray's processes; the container then exits.
set -eu
role="${1:-}"
fail() { echo "ray-node: $*" >&2; exit 1; }
[ "${RAY_AUTH_MODE:-}" = token ] || fail "RAY_AUTH_MODE must be token"
ray_token="${RAY_AUTH_TOKEN:-}" gcs_password="${RAY_GCS_REDIS_PASSWORD:-}"
[ "${#ray_token}" -ge 32 ] \
  || fail "the cluster's Ray token is missing or short: set CXRL_RAY_TOKEN (>= 32 characters) in the env file"
python /app/healthcheck.py --require-token
# the container's address on the compose network (Ray's own guess asks for a route to the internet)
ip="$(python -c 'import socket; print(socket.gethostbyname(socket.gethostname()))')"
common="--block --disable-usage-stats --node-ip-address=$ip"
case "$role" in
  head)
    [ "${#gcs_password}" -ge 32 ] \
      || fail "the GCS Redis password is missing or short: set CXRL_RAY_GCS_PASSWORD in the env file"
    # shellcheck disable=SC2086
    ray start --head --port=6379 --num-cpus=0 --include-dashboard=true --dashboard-host=127.0.0.1 \
      --redis-password="$gcs_password" $common &
    ;;
  worker)
    # wait for the head's GCS (a raylet that finds none gives up after a minute)
    python - "${RAY_HEAD_ADDRESS:-ray-head:6379}" <<'EOF'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
deadline = time.monotonic() + 900
while True:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            sys.exit(f"ray-node: the head's GCS at {sys.argv[1]} does not answer: {exc}")
        time.sleep(2)
EOF
    # shellcheck disable=SC2086
    ray start --address="${RAY_HEAD_ADDRESS:-ray-head:6379}" --num-cpus="${RAY_NODE_CPUS:-2}" $common &
    ;;
  *) fail "usage: ray-node.sh head|worker" ;;
esac
ray_pid=$!
trap 'kill -TERM "$ray_pid" 2>/dev/null || true' TERM INT
if [ "$role" = head ]; then
  (
    config="${CXRL_SERVE_CONFIG:-/config/serve-cluster.yaml}"
    until serve deploy --address http://127.0.0.1:8265 "$config" >/tmp/serve-deploy.log 2>&1; do
      kill -0 "$ray_pid" 2>/dev/null || exit 0
      sleep 3
    done
    echo "ray-node: deployed $config"
  ) &
fi
status=0
wait "$ray_pid" || status=$?
# after SIGTERM `wait` returns at once: wait for Ray's processes to stop
while kill -0 "$ray_pid" 2>/dev/null; do wait "$ray_pid" || status=$?; done
echo "ray-node: ray start exited ($status)"
exit "$status"
