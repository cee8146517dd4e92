"""How many model-engine and training tasks run at once on a machine: a Prefect global concurrency limit.

    with engine_slot(config):        # in the synthesize, train and evaluate tasks
        run_job(...)                 # a vLLM engine or a training process

Several runs of one Prefect server (two workers, two deployment runs, `curate serve`
beside a worker) share a machine's cores and memory; each vLLM engine or trainer wants
all of them. The limit `curate-engine-<host>` (Prefect's own global concurrency limits,
visible and editable with `prefect gcl ls` / `prefect gcl update`) lets at most
`runner.engine_slots` such tasks hold a slot on one host; the others wait in the
Running state until a slot frees. It is created with the config's value the first time
and never overwritten after, so an operator's `prefect gcl update` stands.

The limit is a Prefect server's (`PREFECT_API_URL` set, through Prefect's settings): the
server keeps each holder's lease and its repossessor frees the slot of a run killed with
`kill -9` once the lease lapses (LEASE_S). A run without a server (`curate run` on the
ephemeral in-process API) is not limited: its API dies with it, and a slot it held could
never be freed. Outside a Prefect run, or with `runner.engine_slots: null`, there is no limit.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL

from core.config import Config

# A slot's lease: renewed while the stage runs; a killed holder's slot frees within about this long.
LEASE_S = 60.0


def engine_limit_name(host: str | None = None) -> str:
    """The limit's name for this machine (Prefect names: letters, digits, dashes)."""
    host = (host or socket.gethostname()).lower()
    return "curate-engine-" + "".join(c if c.isalnum() else "-" for c in host)


def ensure_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` with `slots` unless it exists (an existing one is left as set)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


@contextlib.contextmanager
def engine_slot(config: Config) -> Iterator[None]:
    """Hold one of this machine's engine slots for the block (inside a Prefect run, when limited)."""
    slots = config.runner.engine_slots
    in_run = TaskRunContext.get() is not None or FlowRunContext.get() is not None
    if slots is None or not in_run or not PREFECT_API_URL.value():
        yield
        return
    name = engine_limit_name()
    ensure_limit(name, slots)
    # strict: a limit that vanished is an error, not a silent pass; the lease is renewed while a long stage runs
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S, raise_on_lease_renewal_failure=False):
        yield
