"""The near-dup passes on Ray: filters/near_dup.py's sharded units of work as Ray tasks.

    links_fn = ray_links_fn(shards=8)        # dedupe_near(..., links_fn=links_fn)

With `runner.kind: ray` the dedupe stage runs inside a Ray worker (Prefect's
RayTaskRunner); from there each row shard's signatures and band keys, each band's
grouping into candidate pairs, and each chunk of pair verifications is a Ray task.
Only candidate pairs come back to the stage; the links, and so the snapshot, are the
same as in-process (tests/filters/test_near_dup.py, tests/flows/test_deployment.py).
"""

from __future__ import annotations

import functools
from typing import Callable

from filters.near_dup import NearDupLinks, find_links_mapped


def _call(fn, *args):
    return fn(*args)


def ray_map(fn: Callable, *iterables) -> list:
    """`map(fn, *iterables)` with each call a Ray task (results in order)."""
    import ray

    remote = ray.remote(_call)
    return ray.get([remote.remote(fn, *args) for args in zip(*iterables)])


def ray_links_fn(shards: int) -> Callable[..., NearDupLinks]:
    return functools.partial(find_links_mapped, map_fn=ray_map, shards=shards)
