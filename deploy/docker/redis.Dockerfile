# A local stand-in for the redis image of docker-compose.yml where Docker Hub cannot be reached:
# Debian bookworm's redis-server on the debootstrap base (deploy/docker/base-image.sh). Same
# user id (999), data directory (/data) and tools (redis-server, redis-cli, sh) as the official
# image. `deploy/docker/images.sh` builds it when LOCAL_BASE=1.
ARG BASE_IMAGE=cxrl/python:3.11-bookworm-debian
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log /etc/redis \
 && usermod --uid 999 redis && groupmod --gid 999 redis \
 && mkdir /data && chown redis:redis /data
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
