"""Where true evaluations run: in this process, on local worker processes (joblib's loky),
or on a Dask cluster (joblib's Dask backend).

A worker builds its evaluator once from a small picklable `EvaluatorSpec` (paths and
settings) and keeps it for every later shard. It checks that its evaluator has the
coordinator's fingerprint, so a worker on another machine with other data, model or
TensorFlow version cannot mix its accuracies in. Workers only say which images of a
shard they predicted right; the coordinator alone adds them up, decides on early
stopping and writes the cache, in genome order. So a run on any number of workers
gives the same evaluations, fronts and hypervolume history as a serial one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from surrogate_nas.errors import UserError


@dataclass(frozen=True)
class EvaluatorSpec:
    """Everything a worker needs to rebuild the coordinator's evaluator."""

    paths: object  # config.Paths (absolute paths: a cluster worker must see the same files)
    split: str
    n_images: int | None
    seed: int
    compensation: str
    approximate: str
    fingerprint: str
    threads: int = 0  # TensorFlow threads per worker (0: TensorFlow's default)
    rule_images: int | None = None  # the auto rule's settings, as the coordinator's
    prune_k: int | None = None

    def build(self):
        from surrogate_nas.evaluation.evaluator import Evaluator
        from surrogate_nas.evaluation.inputs import (
            ensure_model,
            load_catalog_from,
            load_data_from,
        )

        if self.threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        evaluator = Evaluator.from_paths(ensure_model(self.paths), load_catalog_from(self.paths, self.compensation),
                                         load_data_from(self.paths), self.split, self.n_images, self.seed,
                                         compensation=self.compensation, rule_store=self.paths.cache, quiet=True,
                                         approximate=self.approximate, rule_images=self.rule_images,
                                         prune_k=self.prune_k)
        if evaluator.fingerprint != self.fingerprint:
            raise RuntimeError(f"worker {os.uname().nodename} pid {os.getpid()}: its evaluator differs from the "
                               "coordinator's (other files, TensorFlow version or device); refusing to score")
        return evaluator


_EVALUATORS: dict = {}


_LOCK = threading.Lock()  # a Dask worker may run several tasks in threads of one process


def _evaluator(spec: EvaluatorSpec):
    if spec not in _EVALUATORS:
        _EVALUATORS[spec] = spec.build()
    return _EVALUATORS[spec]


def count_shard(spec: EvaluatorSpec, genome, start: int, stop: int) -> tuple[int, float]:
    """Correct predictions of `genome` on images [start, stop)."""
    with _LOCK:
        return _evaluator(spec).count(genome, start, stop)


def correct_shard(spec: EvaluatorSpec, genome, start: int, stop: int):
    """The worker-side task: per image of [start, stop), did `genome` predict it right
    (a boolean vector), and seconds."""
    with _LOCK:
        return _evaluator(spec).correct(genome, start, stop)


class InProcess:
    """Shards scored one after the other by this process's evaluator."""

    workers = 1

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def __call__(self, tasks):
        return [self.evaluator.correct(genome, start, stop) for genome, start, stop in tasks]

    def close(self) -> None:
        pass


class JoblibWorkers:
    """Shards scored by joblib: `workers` local processes (loky), or every worker of the
    Dask cluster at `scheduler` (ADDRESS of `dask scheduler`)."""

    def __init__(self, spec: EvaluatorSpec, workers: int = 2, scheduler: str | None = None):
        self.spec = spec
        self.client = None
        if scheduler:
            try:
                from distributed import Client
            except ImportError:
                raise UserError("--dask-scheduler: dask.distributed is not installed "
                                 "(pip install 'surrogate_nas[dask]')") from None
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise UserError(f"--dask-scheduler {scheduler}: cannot connect ({exc})") from None
            self.backend, self.n_jobs = "dask", -1
            self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        else:
            self.backend, self.n_jobs, self.workers = "loky", workers, workers

    def __call__(self, tasks):
        from joblib import Parallel, delayed, parallel_config

        with parallel_config(backend=self.backend, n_jobs=self.n_jobs):
            return Parallel()(delayed(correct_shard)(self.spec, g, lo, hi) for g, lo, hi in tasks)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def threads_per_worker(workers: int) -> int:
    """Split this machine's cores among local workers (oversubscription only slows TF)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
