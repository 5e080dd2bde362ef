"""Shared infrastructure below both apps (``services/``, ``trainer/``), the benchmarks and the tests.

One place each for: the local Redis launcher (:mod:`.redis_local`), free loopback ports
(:mod:`.ports`), the Redis outage guard (:mod:`.redis_guard`), bounded retries (:mod:`.retry`),
the ``cxrl serve`` process launcher (:mod:`.serve_process`), processes that die with their parent
(:mod:`.procs`), sha256 digests (:mod:`.hashing`) and atomic files (:mod:`.fileio`).

Unlike the library's models, rewards, RL and world, these modules may use redis; this package
imports nothing else from ``cxrl`` (it is the lowest layer, checked by `make lint`), and importing
the package imports none of its modules.
"""
