"""Worker processes sharing this machine's cores: the folds of a cross-validation, the videos of
an evaluation."""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import cv2
import torch

# spawn, not fork: a forked process cannot use CUDA
SPAWN = multiprocessing.get_context("spawn")


def spawn_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=SPAWN, initializer=initializer, initargs=initargs)


def cores_each(workers: int) -> int:
    """Threads for each of `workers` processes, so that together they use every core once."""
    return max(1, (os.cpu_count() or 1) // workers)


def use_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def start_worker(threads: int, log_level: int) -> None:
    """In a new worker process: its share of the cores, and the command's logging."""
    use_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s %(message)s")
