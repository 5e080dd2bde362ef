#!/usr/bin/env bash
# The pre-release check of the compose stack (`make compose-check`): on this machine, for real.
#  1. a Docker engine (starts dockerd when none answers: DOCKERD_FLAGS, e.g. --storage-driver=vfs)
#  2. the images (built only when missing: deploy/docker/images.sh)
#  3. secrets in build/compose.env (random, 0600; kept between runs)
#  4. `docker compose up -d --wait`: Redis and the reward services, healthy; then the profile
#     "monitoring" (Prometheus and the relay to the reward services' Ray exporter)
#  5. a real request scored from the host: `cxrl score` over gRPC :9000, the same images over
#     HTTP :8000 (same totals), and both refused without the token; where Chromium is
#     installed, the API docs at /docs render offline (Swagger UI lists the operations)
#  6. Prometheus' HTTP API on 127.0.0.1:9090: the reward services' target up, their request
#     counter scraped, every alert of deploy/monitoring/alerts.yml loaded
#  7. the trainer service for two short epochs against the stack (profile "train"), its /metrics
#     target up while it runs and its epoch gauge scraped
#  8. the run as the Redis run registry shows it (`cxrl runs` in the trainer image)
#  9. `docker compose stop`: the reward services end on SIGTERM with exit 0 (not killed)
# 10. `docker compose down --volumes`: no container, network or volume of the project left
# Prints the wall time of every step and the disk the images and volumes take.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
py="${PYTHON:-$repo/.venv/bin/python}"
cxrl="${CXRL:-$repo/.venv/bin/cxrl}"
docker="${DOCKER:-docker}"
compose_bin="${COMPOSE:-docker compose}"
env_file="$repo/build/compose.env"
work="$repo/build/compose-check"
read -r -a compose <<< "$compose_bin"
compose+=(--env-file "$env_file" --project-directory "$repo" -f "$repo/docker-compose.yml")
t_start=$(date +%s)
step_start=$t_start
step() {  # step NAME: print the time the previous step took, then announce NAME
  local now; now=$(date +%s)
  [ -n "${step_name:-}" ] && printf 'compose-check: %-44s %5d s\n' "$step_name" $((now - step_start))
  step_name="$1"; step_start=$now
  [ -n "$1" ] && echo "compose-check: -- $1"
  return 0
}
cleanup() {  # on failure once the stack is up: its logs to a file, then down; the failing step's message stays last
  local rc=$?
  if [ "$rc" != 0 ]; then
    "${compose[@]}" --profile train --profile monitoring logs --no-color --tail 200 > "$work/stack.log" 2>&1 || true
  fi
  "${compose[@]}" --profile train --profile gpu --profile monitoring down --volumes --remove-orphans \
    --timeout 60 >/dev/null 2>&1 || true
}

step "docker engine"
"$repo/deploy/docker/dockerd.sh"

step "images"
# A plain assignment keeps images.sh's exit status (`source <(...)` would lose it): on failure
# the check stops here, with images.sh's message last.
images_env="$("$repo/deploy/docker/images.sh" --if-missing --print-env)"
while IFS= read -r line; do
  case "$line" in
    CXRL_IMAGE=?* | CXRL_PROMETHEUS_IMAGE=?* | CXRL_REDIS_IMAGE=?*) export "${line?}" ;;
    *) echo "compose-check: unexpected line from images.sh --print-env: $line" >&2; exit 1 ;;
  esac
done <<< "$images_env"
[ -n "${CXRL_IMAGE:-}" ] || { echo "compose-check: images.sh printed no CXRL_IMAGE" >&2; exit 1; }

step "secrets (build/compose.env)"
mkdir -p "$repo/build" "$work"
if [ ! -s "$env_file" ]; then
  (umask 077; printf 'CXRL_API_TOKEN=%s\nCXRL_REDIS_PASSWORD=%s\n' \
     "$("$py" -c 'import secrets; print(secrets.token_hex(32))')" \
     "$("$py" -c 'import secrets; print(secrets.token_hex(32))')" > "$env_file")
fi
set -a; source "$env_file"; set +a
prometheus="http://127.0.0.1:${CXRL_PROMETHEUS_PORT:-9090}"

trap cleanup EXIT
echo "compose-check: from here a failure takes the stack down and leaves its logs in build/compose-check/stack.log"
step "compose up --wait (redis, rewards healthy)"
"${compose[@]}" up -d --wait --wait-timeout "${WAIT_TIMEOUT:-900}"
"${compose[@]}" ps

step "profile monitoring up (prometheus, metrics-relay)"
"${compose[@]}" --profile monitoring up -d --wait --wait-timeout 300 prometheus metrics-relay

step "score over gRPC :9000 and HTTP :8000"
"$py" "$repo/deploy/docker/score_request.py" --out "$work"
"$cxrl" score --images "$work/images" --reports "$work/reports.txt" --server 127.0.0.1:9000 \
  --json "$work/grpc.json"
"$py" "$repo/deploy/docker/score_request.py" --out "$work" --http http://127.0.0.1:8000 \
  --compare "$work/grpc.json"
if CXRL_API_TOKEN= "$cxrl" score --images "$work/images" --reports "$work/reports.txt" \
     --server 127.0.0.1:9000 >"$work/no-token.log" 2>&1; then
  echo "compose-check: gRPC scored a request without the token" >&2; exit 1
fi
grep -q UNAUTHENTICATED "$work/no-token.log" || {
  cat "$work/no-token.log" >&2
  echo "compose-check: without the token, gRPC did not answer UNAUTHENTICATED (its answer above)" >&2; exit 1
}
echo "compose-check: without the token, gRPC answers UNAUTHENTICATED"

chromium_bin="$(command -v chromium || command -v chromium-browser || true)"
if [ -n "$chromium_bin" ]; then
  step "API docs in headless Chromium"
  for page in "docs:Score Info" "posture/docs:Predict Info"; do
    url="http://127.0.0.1:8000/${page%%:*}"
    timeout 180 "$chromium_bin" --headless --no-sandbox --disable-gpu --virtual-time-budget=10000 \
      --dump-dom "$url" 2>/dev/null > "$work/dom.html" || true
    for operation in ${page#*:}; do
      grep -q "opblock-summary-description\">$operation<" "$work/dom.html" \
        || { echo "compose-check: $url does not list $operation in Swagger UI" >&2; exit 1; }
    done
    echo "compose-check: $url lists ${page#*:}"
  done
fi

step "Prometheus: rewards scraped, alerts loaded"
# Ray exports every 10 s and Prometheus scrapes every 15 s: the request counter shows within a minute
"$py" "$repo/deploy/docker/prometheus_check.py" "$prometheus" --timeout 180 \
  --rules "$repo/deploy/monitoring/alerts.yml" \
  'up{job="cxrl-rewards"} == 1' 'sum(ray_cxrl_reward_requests_total{status="ok"}) > 0'

step "trainer: two epochs against the stack, scraped"
# In the background, so that Prometheus is asked while the run serves /metrics (two epochs: the
# first one's gauges stay up for the second); --use-aliases: the run container answers to
# `trainer`, the name that deploy/monitoring/prometheus-compose.yml scrapes.
"${compose[@]}" --profile train run --rm -T --use-aliases trainer \
  cxrl train --config /config/check.yaml --run-name compose-check --set rl.epochs=2 \
  --metrics-port 9102 --set metrics.host=0.0.0.0 &
trainer_pid=$!
"$py" "$repo/deploy/docker/prometheus_check.py" "$prometheus" --timeout 900 --while-pid "$trainer_pid" \
  'up{job="cxrl-trainer"} == 1'
wait "$trainer_pid"
"$py" "$repo/deploy/docker/prometheus_check.py" "$prometheus" --timeout 30 \
  'last_over_time(cxrl_trainer_epochs_completed{run="compose-check"}[30m]) >= 1'

step "the run in Redis (cxrl runs)"
# (the password in the Redis URL that `cxrl runs` prints is masked)
"${compose[@]}" --profile train run --rm --no-deps trainer cxrl runs \
  | sed -E 's#(redis://[^:/@]*:)[^@]*@#\1***@#' | tee "$work/runs.txt"
grep -q "compose-check" "$work/runs.txt" && grep -q "finished" "$work/runs.txt" \
  || { echo "compose-check: the run is not in Redis as finished" >&2; exit 1; }

step "disk"
"$docker" image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^cxrl/' || true
"$docker" system df

step "stop: SIGTERM ends the reward services"
# tini forwards SIGTERM to cxrl serve, which shuts Serve and Ray down and exits 0; a container
# that needs SIGKILL after the grace period exits 137.
"${compose[@]}" stop --timeout 60 rewards
rewards_id="$("${compose[@]}" ps -aq rewards)"
code="$("$docker" inspect -f '{{.State.ExitCode}}' "$rewards_id")"
[ "$code" = 0 ] || { echo "compose-check: rewards exited $code on SIGTERM (137: killed after 60 s)" >&2; exit 1; }
echo "compose-check: rewards stopped cleanly on SIGTERM (exit 0)"

step "compose down"
trap - EXIT
"${compose[@]}" --profile train --profile gpu --profile monitoring down --volumes --remove-orphans --timeout 60
project=label=com.docker.compose.project=cxrl
left="$("$docker" ps -aq --filter "$project")$("$docker" network ls -q --filter "$project")"
left+="$("$docker" volume ls -q --filter "$project")"
[ -z "$left" ] || { echo "compose-check: left behind: $left" >&2; exit 1; }
echo "compose-check: nothing of the project left (containers, networks, volumes)"
step ""
echo "compose-check: passed in $(( $(date +%s) - t_start )) s"
