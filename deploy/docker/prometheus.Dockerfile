# Prometheus of the compose stack's `monitoring` profile (docker-compose.yml): Debian bookworm's
# prometheus (2.42, with promtool) and socat (the relay that carries the reward services' Ray
# exporter, which listens on the container's loopback only, to the compose network), on the
# project's base (the BASE_IMAGE of the cxrl image; deploy/docker/base-image.sh where Docker Hub
# cannot be reached). `deploy/docker/images.sh` builds it as cxrl/prometheus:2.42-bookworm.
# Runs as uid 10002 (no passwd entry needed) with its data under /prometheus; the config comes
# from a bind mount of deploy/monitoring at /config.
ARG BASE_IMAGE=cxrl/python:3.11-bookworm-debian
FROM ${BASE_IMAGE}
# policy-rc.d: the package's init script is not started inside the build
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends prometheus socat \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /usr/sbin/policy-rc.d \
      /etc/prometheus/prometheus.yml \
 && mkdir /prometheus && chown 10002:10002 /prometheus
WORKDIR /prometheus
USER 10002:10002
EXPOSE 9090
CMD ["prometheus", "--config.file=/config/prometheus-compose.yml", "--storage.tsdb.path=/prometheus"]
