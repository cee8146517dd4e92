"""Training on Ray Train: trainers.qlora's TRL training under Ray Train's TorchTrainer, on N DDP workers.

    adapter = train_adapter(snapshot_dir, model_dir, cfg)   # runner local: trainers.qlora.train; ray: train_on_ray
    curate train banking77 --set runner=ray --set workers=2

Each worker is a process of its own that runs trainers.qlora's setup and fit in a DDP group
Ray Train makes (gloo on CPUs; NCCL with one GPU per worker on GPUs). `batch_size` stays the
global batch: each worker takes an equal share of it and the gradients are averaged after
every step, so a step trains on as many rows as one process would. Rank 0 writes the
checkpoints (every eval_steps, as in one process) and reports each to Ray Train, which keeps
it under <run>/ray/ (RunConfig.storage_path). When a worker fails, Ray Train starts the
group again (`max_failures` times) and every worker resumes from the checkpoint
`ray.train.get_checkpoint()` returns; a killed run started again on the same run folder
resumes the same way (Ray Train restores a run from its name and storage path). Rank 0
then writes the adapter folder trainers.qlora writes: same files, same format.

On a cluster the project folder (the config's relative paths: the format template, ...),
the snapshot, the model and the run folder must be on storage every node sees, at the same
path on each: a worker works in the driver's folder. The driver (the `curate train` or flow process) joins the Ray
cluster of RAY_ADDRESS, or starts a local Ray; Ray is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from core.engine_pool import connect_ray
from core.progress import LOGGER, PROGRESS_LOGGER
from core.train_config import TrainConfig
from trainers.qlora import ADAPTER_DIR, default_run_dir, fit, save_checkpoint, set_threads, setup, train, validate


def _report_callback():
    """Report each checkpoint rank 0 saves to Ray Train (the other ranks report their metrics): Ray keeps it."""
    import ray.train
    import torch.distributed as dist
    from transformers import TrainerCallback

    class ReportCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if dist.is_initialized():
                dist.barrier()  # every rank has written its part of the checkpoint (its RNG state)
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            losses = [h for h in state.log_history if "loss" in h]
            metrics = {"step": state.global_step, **({"loss": float(losses[-1]["loss"])} if losses else {})}
            if state.is_world_process_zero and ckpt.is_dir():
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt)),
                                 checkpoint_dir_name=ckpt.name)
            else:
                ray.train.report(metrics)

    return ReportCheckpoints()


class _ToQueue(logging.Handler):
    """A worker's `curate` lines (steps, loss, ETA) into a Ray queue the driver reads (relay_progress)."""

    def __init__(self, queue) -> None:
        super().__init__(logging.INFO)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record.getMessage())
        except Exception:  # noqa: BLE001 - a full or gone queue never stops training
            pass


@contextlib.contextmanager
def relay_progress() -> Iterator[Any]:
    """A Ray queue for rank 0's progress lines; while the block runs, each is logged here on `curate.progress`,
    so they reach this process's console, run log or parent (flows/proc.py) as in-process training's do."""
    from ray.util.queue import Empty, Queue

    queue, done, log = Queue(maxsize=1000), threading.Event(), logging.getLogger(PROGRESS_LOGGER)

    def relay() -> None:
        while not done.is_set():
            try:
                log.info(queue.get(timeout=0.5))
            except Empty:
                continue

    thread = threading.Thread(target=relay, name="ray-train-progress", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        done.set()
        thread.join()
        while not queue.empty():
            log.info(queue.get_nowait())
        queue.shutdown()


def train_worker(loop: dict) -> None:
    """One Ray Train worker: setup, fit (resuming from Ray's latest checkpoint), validate; rank 0 saves the adapter."""
    import ray.train
    import torch
    from transformers import set_seed

    os.chdir(loop["cwd"])  # the config's paths (format.template, ...) are the project folder's, as in the driver
    context = ray.train.get_context()
    if context.get_world_rank() == 0:  # one worker's progress is the run's
        logger = logging.getLogger(LOGGER)
        logger.setLevel(logging.INFO)
        logger.addHandler(_ToQueue(loop["progress"]))
    cfg = TrainConfig.model_validate(loop["config"])
    set_seed(cfg.seed)
    set_threads(cfg)
    if cfg.cpu_threads is None and not torch.cuda.is_available():
        torch.set_num_threads(max(1, int(cfg.worker_cpus)))  # the cores Ray gave this worker, not the machine's
    run = setup(loop["snapshot"], loop["model"], cfg, loop["task"], loop["out"], check=False)  # the driver checked
    held = ray.train.get_checkpoint()
    if held is None:
        fit(run, resume=False, workers=context.get_world_size(), callbacks=[_report_callback()])
    else:
        with held.as_directory() as folder:
            fit(run, workers=context.get_world_size(), checkpoint=Path(folder), callbacks=[_report_callback()])
    metrics = validate(run)  # every rank: the validation pass is split between them
    if context.get_world_rank() == 0:
        save_checkpoint(run, metrics)


def _use_gpus(cfg: TrainConfig) -> bool:
    """Whether the workers train on GPUs: device cuda, or auto on a cluster that has GPUs."""
    import ray

    if cfg.device != "auto":
        return cfg.device == "cuda"
    return ray.cluster_resources().get("GPU", 0) > 0


def train_on_ray(snapshot_dir: str | Path, model_dir: str | Path, cfg: TrainConfig, task_cfg: Any = None,
                 out_dir: str | Path | None = None, *, num_cpus: int | None = None) -> Path:
    """Train on `cfg.workers` Ray Train workers; returns the adapter folder (the one trainers.qlora.train writes).

    The format is checked here first (FormatViolationError before any worker starts)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    snapshot_dir, model_dir = Path(snapshot_dir).resolve(), Path(model_dir).resolve()
    run_dir = Path(out_dir or default_run_dir(snapshot_dir, cfg)).resolve()
    setup(snapshot_dir, model_dir, cfg, task_cfg, run_dir, load=False)  # the token-level check, before Ray
    connect_ray(num_cpus=num_cpus)
    gpus = _use_gpus(cfg)
    with relay_progress() as progress:
        _fit_on_ray(TorchTrainer(
            train_worker,
            train_loop_config={"snapshot": str(snapshot_dir), "model": str(model_dir), "config": cfg.model_dump(mode="json"),
                               "task": task_cfg, "out": str(run_dir), "progress": progress, "cwd": os.getcwd()},
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=gpus,
                                         resources_per_worker={"CPU": cfg.worker_cpus, **({"GPU": 1} if gpus else {})}),
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            run_config=RunConfig(
                name="train", storage_path=str(run_dir / "ray"),  # the same name and folder: a re-run resumes
                failure_config=FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.save_total_limit),
            ),
        ))
    return run_dir / ADAPTER_DIR


def _fit_on_ray(trainer) -> None:
    """TorchTrainer.fit, raising the worker's own error (Ray Train wraps it) so that callers see what failed."""
    from ray.train import WorkerGroupError

    try:
        trainer.fit()
    except WorkerGroupError as exc:
        first = next(iter(exc.worker_failures.values()), None)  # by rank: rank 0's first
        if first is None:
            raise
        raise first from exc


def train_adapter(snapshot_dir: str | Path, model_dir: str | Path, cfg: TrainConfig, task_cfg: Any = None,
                  out_dir: str | Path | None = None) -> Path:
    """Train where `cfg.runner` says: in this process (trainers.qlora.train) or on Ray Train workers."""
    if cfg.runner == "ray":
        return train_on_ray(snapshot_dir, model_dir, cfg, task_cfg, out_dir)
    return train(snapshot_dir, model_dir, cfg, task_cfg, out_dir)
