"""Work that outgrows one process, as ``dask.distributed`` tasks.

The harness's scenarios and weeks (:mod:`twin.bench`) and the nights of a
backfill (:func:`twin.pipeline.localise_backfill`) are independent pieces of
work: each runs as one task on a Dask cluster. By default the cluster is a
:class:`distributed.LocalCluster` of one single-threaded worker process per
core of this machine (the job's NumPy and EPANET work holds the GIL, so
processes, not threads); with a scheduler address the tasks go to a cluster
started elsewhere (``dask scheduler`` and ``dask worker ADDRESS`` on each
machine, with twin installed and the input files at the same paths).

Large objects every task needs (the parsed network) are sent to the workers
once (:func:`share`), not with every task. A task that raises comes back as
that task's error (:func:`map_tasks`), it does not stop the others.

Nothing is written to the working directory: the local workers keep their
spill files in a temporary folder removed when the cluster closes; no
dashboard is served.

Examples
--------
>>> from twin.scale import dask_client, map_tasks, share     # doctest: +SKIP
>>> with dask_client(workers=2) as client:
...     net = share(client, network)
...     rows = map_tasks(client, score_week, weeks, shared={"network": net},
...                      on_error=lambda week, exc: {"week": week, "error": str(exc)})
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from twin.errors import InputError

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger(__name__)

__all__ = ["dask_client", "default_workers", "map_tasks", "share", "use_cluster"]

T = TypeVar("T")
R = TypeVar("R")

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT_S = 10


def default_workers() -> int:
    """The cores this process may run on (the default number of local workers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def use_cluster(tasks: int, *, workers: int | None = None, scheduler: str | None = None) -> bool:
    """Whether ``tasks`` pieces of work are worth a cluster.

    A scheduler address always means its cluster. Otherwise a local cluster
    is started only for at least two tasks and two workers (``workers``,
    default the machine's cores): one task or one worker runs in this
    process, without the seconds a cluster takes to start.
    """
    if scheduler is not None:
        return True
    n = default_workers() if workers is None else workers
    return tasks >= 2 and n >= 2


@contextmanager
def dask_client(scheduler: str | None = None, *, workers: int | None = None) -> Iterator["Client"]:
    """A Dask client on a scheduler address, or on a local cluster started (and closed) here.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
        Without it a :class:`distributed.LocalCluster` is started.
    workers : int, optional
        Worker processes of the local cluster (one thread each); default the
        machine's cores (:func:`default_workers`). Ignored with ``scheduler``.

    Yields
    ------
    distributed.Client

    Raises
    ------
    InputError
        The scheduler cannot be reached, or ``workers`` is below 1.
    """
    import dask  # deferred: only the commands that scale out pay for it
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot reach the Dask scheduler ({why})",
                             element=f"--scheduler {scheduler}",
                             fix="give the address `dask scheduler` prints (e.g. tcp://host:8786), "
                                 "or leave --scheduler out to run on this machine's cores") from None
        log.info("Dask scheduler %s: %d workers", scheduler, len(client.scheduler_info().get("workers", {})))
        try:
            yield client
        finally:
            client.close()
        return
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise InputError(f"a cluster needs at least one worker, not {n}", element="--workers", fix="give --workers 2")
    with tempfile.TemporaryDirectory(prefix="twin-dask-") as spill:
        # no statistical profiler in the workers: it samples the task's stack every 10 ms, holding the GIL;
        # the scheduler's scratch space in the same temporary folder (else it stays in the system's)
        with dask.config.set({"distributed.worker.profile.enabled": False, "temporary-directory": spill}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                                   local_directory=spill, silence_logs=logging.CRITICAL)
        try:
            client = Client(cluster)
            log.info("Dask local cluster: %d worker processes", n)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


def share(client: "Client", obj: Any) -> "Future":
    """Send ``obj`` to every worker once; pass the returned future to the tasks that need it.

    A task given the future receives the object itself, read from its
    worker's memory, instead of a copy shipped with every task.
    """
    return client.scatter(obj, broadcast=True, hash=False)


def map_tasks(
    client: "Client",
    fn: Callable[..., R],
    items: Sequence[T],
    *,
    shared: Mapping[str, Any] | None = None,
    on_error: Callable[[T, BaseException], R],
    progress: Callable[[str, int, int], None] | None = None,
    stage: str = "tasks",
) -> list[R]:
    """Run ``fn(item, **shared)`` as one Dask task per item; the results in the order of ``items``.

    Parameters
    ----------
    client : distributed.Client
    fn : callable
        A module-level function (sent to the workers by reference).
    items : sequence
        One task each.
    shared : mapping, optional
        Keyword arguments of every task; futures from :func:`share` arrive as
        the objects they stand for.
    on_error : callable
        ``on_error(item, exc)``: the result of a task that raised (or whose
        worker died), so one bad piece of work is a row of the results,
        not the end of all of them.
    progress : callable, optional
        ``progress(stage, done, total)`` as tasks finish.
    stage : str
        Name of the stage for ``progress``.

    Returns
    -------
    list
        One result per item, in the order of ``items``.
    """
    from distributed import as_completed

    futures = client.map(fn, list(items), pure=False, **dict(shared or {}))
    where = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    for done, fut in enumerate(as_completed(futures), start=1):
        i = where[fut.key]
        try:
            results[i] = fut.result()
        except Exception as exc:  # a task's failure is its result, not the end of the others
            log.warning("task %d of %d failed: %s: %s", i + 1, len(futures), type(exc).__name__, exc)
            results[i] = on_error(items[i], exc)
        if progress is not None:
            progress(stage, done, len(futures))
    return results
