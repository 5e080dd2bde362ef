#!/usr/bin/env bash
# Chaos under load (`make chaos-check`; before a release, like `make compose-check`; not in
# `make test`): the compose `cluster` profile on this machine, for real.
#  1. a Docker engine and the image (as compose-check.sh: dockerd.sh, images.sh --if-missing)
#  2. secrets in build/compose.env, plus the cluster's Ray token and GCS Redis password
#  3. `--profile cluster up --wait`: the cache Redis, the GCS Redis, the Ray head and two
#     worker nodes (one CPU each), every node's proxy answering
#  4. Ray token auth between the nodes: a Ray client without the cluster's token is refused;
#     every reward application has its two replicas on the two worker nodes
#  5. deploy/docker/chaos.py: scoring load over gRPC and HTTP, a reference training run, then
#     worker-node kill, head kill, cache Redis restart, worker-node pause, under the load and a
#     second training run (report in build/chaos-check/report.md and report.json)
#  6. `down --volumes`: no container, network or volume of the project and no published port left
# Wall time of every step; stops at the first failing one (logs of the nodes then).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
py="${PYTHON:-$repo/.venv/bin/python}"
compose_bin="${COMPOSE:-docker compose}"
env_file="$repo/build/compose.env"
work="$repo/build/chaos-check"
read -r -a compose <<< "$compose_bin"
# a project of its own (cxrl-chaos): a compose-check or `docker compose up` of the default stack
# (project cxrl) beside it touches nothing of it, nor it theirs
project="${CHAOS_PROJECT:-cxrl-chaos}"
compose+=(-p "$project" --env-file "$env_file" --project-directory "$repo" -f "$repo/docker-compose.yml" --profile cluster)
nodes=(ray-head ray-worker-1 ray-worker-2)
ports=(9100 9101 9102 8100 8101 8102)
t_start=$(date +%s)
step_start=$t_start
step() {
  local now; now=$(date +%s)
  [ -n "${step_name:-}" ] && printf 'chaos-check: %-50s %5d s\n' "$step_name" $((now - step_start))
  step_name="$1"; step_start=$now
  [ -n "$1" ] && echo "chaos-check: -- $1"
  return 0
}
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "chaos-check: FAILED (exit $rc); logs of the cluster:" >&2
    "${compose[@]}" logs --no-color --tail 60 "${nodes[@]}" >&2 || true
  fi
  "${compose[@]}" down --volumes --remove-orphans --timeout 60 >/dev/null 2>&1 || true
}

step "docker engine"
"$repo/deploy/docker/dockerd.sh"

step "images"
# an assignment keeps images.sh's exit status (as in compose-check.sh)
images_env="$("$repo/deploy/docker/images.sh" --if-missing --print-env)"
while IFS= read -r line; do
  case "$line" in
    CXRL_IMAGE=?* | CXRL_PROMETHEUS_IMAGE=?* | CXRL_REDIS_IMAGE=?*) export "${line?}" ;;
    *) echo "chaos-check: unexpected line from images.sh --print-env: $line" >&2; exit 1 ;;
  esac
done <<< "$images_env"

step "secrets (build/compose.env)"
mkdir -p "$repo/build" "$work"
secret() { "$py" -c 'import secrets; print(secrets.token_hex(32))'; }
(
  umask 077
  touch "$env_file"
  for name in CXRL_API_TOKEN CXRL_REDIS_PASSWORD CXRL_RAY_TOKEN CXRL_RAY_GCS_PASSWORD; do
    grep -q "^$name=." "$env_file" || printf '%s=%s\n' "$name" "$(secret)" >> "$env_file"
  done
)
chmod 600 "$env_file"
set -a; source "$env_file"; set +a

trap cleanup EXIT
step "cluster up --wait (redis, ray-gcs-redis, head, 2 worker nodes)"
"${compose[@]}" up -d --wait --wait-timeout "${WAIT_TIMEOUT:-1500}" "${nodes[@]}"
"${compose[@]}" ps

step "token auth between nodes; replicas across worker nodes"
if "${compose[@]}" exec -T -e RAY_AUTH_TOKEN="$(secret)" ray-worker-1 \
     timeout 120 ray status --address ray-head:6379 >"$work/wrong-token.log" 2>&1; then
  echo "chaos-check: a Ray client with a wrong token reached the GCS" >&2; exit 1
fi
grep -q "InvalidAuthToken" "$work/wrong-token.log" \
  || { echo "chaos-check: the wrong-token client failed, but not on authentication:" >&2; tail -5 "$work/wrong-token.log" >&2; exit 1; }
echo "chaos-check: a Ray client with a wrong token is refused by the GCS (InvalidAuthToken)"
"${compose[@]}" exec -T ray-head python - <<'EOF' | tee "$work/placement.txt"
from collections import defaultdict
from ray.util.state import list_actors, list_nodes
nodes = {n.node_id: n.node_ip for n in list_nodes(address="auto", filters=[("state", "=", "ALIVE")])}
apps = defaultdict(list)
for a in list_actors(address="auto", filters=[("state", "=", "ALIVE")], limit=1000):
    if (a.name or "").startswith("SERVE_REPLICA::"):
        apps[a.name.split("::", 1)[1].split("#", 1)[0]].append(nodes.get(a.node_id, a.node_id))
for app, ips in sorted(apps.items()):
    print(f"placement: {app}: replicas on {sorted(ips)}")
bad = [app for app, ips in apps.items() if len(set(ips)) != 2]
assert len(apps) == 4 and not bad, f"applications without a replica on each worker node: {bad or apps}"
EOF

step "chaos under load (deploy/docker/chaos.py)"
# shellcheck disable=SC2086
"$py" "$repo/deploy/docker/chaos.py" --env-file "$env_file" --out "$work" --compose "$compose_bin" \
  --project "$project" ${CHAOS_ARGS:-}

step "compose down"
trap - EXIT
"${compose[@]}" down --volumes --remove-orphans --timeout 60
left="$(docker ps -aq --filter label=com.docker.compose.project=$project)$(docker network ls -q --filter label=com.docker.compose.project=$project)$(docker volume ls -q --filter label=com.docker.compose.project=$project)"
[ -z "$left" ] || { echo "chaos-check: left behind: $left" >&2; exit 1; }
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "chaos-check: something still listens on 127.0.0.1:$port" >&2; exit 1
  fi
done
echo "chaos-check: nothing of the project left (containers, networks, volumes, published ports)"
step ""
echo "chaos-check: passed in $(( $(date +%s) - t_start )) s"
