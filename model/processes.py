"""Worker processes sharing this machine's cores: the folds of a cross-validation, the videos of
an evaluation."""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import torch

# spawn, not fork: a forked process cannot use CUDA
SPAWN = multiprocessing.get_context("spawn")
CGROUP_ROOT = Path("/sys/fs/cgroup")  # as a container sees its own


def available_cores(cgroup_root: Path | None = None) -> int:
    """The cores this process may use: those it may run on (a container's CPU set, `taskset`),
    fewer where its control group's CPU quota allows less (`docker --cpus`, a Kubernetes limit);
    at least one. `os.cpu_count()` counts the host's, and threads past the cores slow the network
    down (scoring took 2× as long at 16 threads on two cores, 4–5× at 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no such call outside Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root or CGROUP_ROOT)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_cpu_quota(root: Path) -> float | None:
    """The cores' worth of time a control group allows this process (cgroup v2's cpu.max, "200000
    100000" for two; v1's cpu.cfs_quota_us over cpu.cfs_period_us), else None: no quota, or none readable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota, period = int((folder / "cpu.cfs_quota_us").read_text()), int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def spawn_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=SPAWN, initializer=initializer, initargs=initargs)


def cores_each(workers: int) -> int:
    """Threads for each of `workers` processes, so that together they use every core once."""
    return max(1, available_cores() // workers)


def use_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def start_worker(threads: int, log_level: int) -> None:
    """In a new worker process: its share of the cores, and the command's logging."""
    use_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s %(message)s")
