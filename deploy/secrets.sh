#!/usr/bin/env bash
# Write the secret values that `kubectl kustomize deploy/overlays/...` turns into Secrets:
# random 32-byte hex tokens in deploy/base/secrets/ (git-ignored), 0600, never overwritten.
#   api-token            the reward API's bearer token (CXRL_API_TOKEN of services and trainer)
#   ray-token            Ray token authentication of the reward services' Ray cluster
#   ray-trainer-token    Ray token authentication of the trainer's RayJob cluster
#   redis-password       the cache Redis (ACL user cxrl)
#   ray-gcs-password     the Redis that keeps Ray's GCS state (fault tolerance)
# Without these files the render fails (kustomize: file not found): there is no empty default.
# To bring your own values, write the files yourself (one line, no newline needed).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/base/secrets"
umask 077
for name in api-token ray-token ray-trainer-token redis-password ray-gcs-password; do
  if [ -s "$dir/$name" ]; then echo "secrets.sh: $name exists, kept"; continue; fi
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$dir/$name"
  echo "secrets.sh: wrote $dir/$name"
done
