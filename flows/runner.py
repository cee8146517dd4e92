"""Where the flow's tasks run: the task runner a config names.

    flow = with_runner(curate_and_train, config)     # runner.kind: local (threads) or ray

`ray` sends the row shards of the row-wise stages (clean) and the near-dup passes to Ray
workers through Prefect's RayTaskRunner (prefect-ray, an optional dependency: imported
only when asked for); it needs a real Prefect server (`curate serve`), not the
ephemeral in-process API. The library never knows which runner it is under.
"""

from __future__ import annotations

from core.config import Config


def task_runner(config: Config):
    """Prefect's RayTaskRunner for `runner.kind: ray` (a local Ray, or the cluster at runner.address); None for local."""
    if config.runner.kind != "ray":
        return None
    from prefect_ray import RayTaskRunner

    r = config.runner
    init = {"include_dashboard": False, **({"num_cpus": r.num_cpus} if r.num_cpus else {})}
    return RayTaskRunner(address=r.address, init_kwargs=None if r.address else init)


def with_runner(flow_obj, config: Config):
    """The flow with the task runner the config names (the flow itself when it is the default)."""
    runner = task_runner(config)
    return flow_obj if runner is None else flow_obj.with_options(task_runner=runner)
