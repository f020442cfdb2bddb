"""Scoring many files, in worker processes for the heavy metrics."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from diffsep.evaluate.matching import EvalPlan
from diffsep.evaluate.scoring import HEAVY_METRICS, EvalSettings, FileScores, score_item


def default_jobs() -> int:
    """CPU cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def evaluate(
    plan: EvalPlan,
    settings: EvalSettings,
    *,
    jobs: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[FileScores]:
    """Score every item of ``plan``; returns scores in the plan's (name) order.

    The heavy metrics (PESQ, ESTOI, DNSMOS) run in ``jobs`` worker processes when ``jobs > 1``;
    otherwise, and always for the SI-SDR family alone, everything runs in this process.
    ``on_progress(done, total)`` is called after each file. The first error stops the run.
    """
    items = plan.items
    total = len(items)
    parallel = jobs > 1 and total > 1 and bool(HEAVY_METRICS & set(settings.metrics))
    if not parallel:
        results = []
        for done, item in enumerate(items, start=1):
            results.append(score_item(item, settings))
            if on_progress is not None:
                on_progress(done, total)
        return results

    by_index: dict[int, FileScores] = {}
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=context)
    try:
        pending: dict[Future[FileScores], int] = {}
        queue = iter(enumerate(items))
        limit = 4 * min(jobs, total)

        def refill() -> None:
            for index, item in queue:
                pending[executor.submit(score_item, item, settings)] = index
                if len(pending) >= limit:
                    return

        refill()
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                by_index[index] = future.result()
                if on_progress is not None:
                    on_progress(len(by_index), total)
            refill()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [by_index[i] for i in range(total)]


