"""Runtimes: where trials run. Thread pool in the flow process, or Ray (local or a cluster by address).

Also carries the trial's resources to Ray (``num_cpus``, ``num_gpus``) and falls back cleanly when
a trial asks for GPUs the cluster does not have: it runs on CPU and is still billed its GPU share,
so caps behave the same as on the GPU machine it was configured for.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

from prefect.task_runners import ThreadPoolTaskRunner

__all__ = ["Runtime", "make_runtime"]

log = logging.getLogger("rungflow.runtime")


@dataclass
class Runtime:
    kind: str
    task_runner: Any
    slots: int
    ray_num_gpus: float
    ray_num_cpus: float
    note: str = ""

    @contextlib.contextmanager
    def trial_resources(self) -> Iterator[None]:
        """Wrap ``train_trial.map/submit`` so each Ray task asks for the trial's resources."""
        if self.kind != "ray":
            yield
            return
        from prefect_ray.context import remote_options

        with remote_options(num_cpus=self.ray_num_cpus, num_gpus=self.ray_num_gpus):
            yield


def _ray_env() -> dict[str, str]:
    # Ray workers must report to the same Prefect API as the flow; with no URL each worker would
    # start an ephemeral server of its own.
    env = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_") or k.startswith("RUNGFLOW_")}
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return env


def make_runtime(kind: str, *, address: str | None, gpus_per_trial: float, cpus_per_trial: float,
                 max_concurrent: int | None) -> Runtime:
    if kind == "thread":
        slots = max_concurrent or max(1, int((os.cpu_count() or 1) // max(cpus_per_trial, 1)))
        return Runtime("thread", ThreadPoolTaskRunner(max_workers=slots), slots, 0.0, cpus_per_trial)
    import ray
    from prefect_ray import RayTaskRunner

    init_kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": _ray_env()},
        "include_dashboard": False,
        "log_to_driver": True,
        "ignore_reinit_error": True,
    }
    if address is None:
        init_kwargs["num_cpus"] = os.cpu_count()
    # Ray is started here (not lazily by the runner) so slots and GPU fallback are known up front.
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **{k: v for k, v in init_kwargs.items() if k != "num_cpus"})
        else:
            # "local" always starts a fresh instance; without it Ray attaches to any cluster recorded in
            # /tmp/ray and then refuses num_cpus.
            ray.init(address="local", **init_kwargs)
    resources = ray.cluster_resources()
    cluster_gpus = float(resources.get("GPU", 0.0))
    cluster_cpus = float(resources.get("CPU", 1.0))
    note = ""
    ray_gpus = gpus_per_trial
    if gpus_per_trial > 0 and cluster_gpus < gpus_per_trial:
        ray_gpus = 0.0
        note = (
            f"runtime.gpus_per_trial={gpus_per_trial:g} but the Ray cluster has {cluster_gpus:g} GPUs: "
            f"trials run on CPU and are billed {gpus_per_trial:g} GPU each"
        )
        log.warning(note)
    by_cpu = int(cluster_cpus // cpus_per_trial) if cpus_per_trial else 1
    by_gpu = int(cluster_gpus // ray_gpus) if ray_gpus > 0 else by_cpu
    slots = max(1, min(by_cpu, by_gpu))
    if max_concurrent:
        slots = min(slots, max_concurrent)
    runner = RayTaskRunner(address=address, init_kwargs=init_kwargs)
    return Runtime("ray", runner, slots, ray_gpus, cpus_per_trial, note)
