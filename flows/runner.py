"""Where the flow's tasks run: the task runner a config names.

    flow = with_runner(curate_and_train, config)     # runner.kind: local (threads) or ray

`ray` sends the row shards of the row-wise stages (clean) and the near-dup passes to Ray
workers through Prefect's RayTaskRunner (prefect-ray, an optional dependency: imported
only when asked for), and the model stages' engines (runner.engines, core/engine_pool.py)
join the same cluster from their child processes (ray_environ). It needs a real Prefect
server (`curate serve`), not the ephemeral in-process API. The library never knows
which runner it is under.
"""

from __future__ import annotations

import sys

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


def ray_environ() -> dict[str, str]:
    """RAY_ADDRESS for a stage's child process when its task runs on a Ray worker: the child's
    engines (runner.engines, core/engine_pool.py) and training workers (train.runner ray, trainers/ray_train.py)
    join that cluster instead of starting a Ray of their own."""
    ray = sys.modules.get("ray")  # only a task that runs on Ray has it imported
    if ray is None or not ray.is_initialized():
        return {}
    return {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
