"""`openft jobs follow`: a job's events as they arrive, with a progress bar over its steps."""

from __future__ import annotations

import sys
import time
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}


def follow(client: Any, job_id: str, poll_seconds: float = 2.0) -> int:
    """Prints events oldest first until the job ends; returns 0 when it succeeded, else 1."""
    from tqdm import tqdm

    seen: set[str] = set()
    bar: tqdm[Any] | None = None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        fresh = []
        for event in client.fine_tuning.jobs.list_events(job_id, limit=100):  # newest first, auto-paginated
            if event.id in seen:
                break
            fresh.append(event)
        for event in reversed(fresh):
            seen.add(event.id)
            if event.type == "metrics" and event.data:
                if bar is None:
                    bar = tqdm(total=event.data["total_steps"], unit="step", file=sys.stderr)
                bar.n = event.data["step"]
                bar.set_postfix_str(f"loss {event.data['train_loss']:.3f}")
                bar.refresh()
            else:
                (bar.write if bar else print)(f"[{event.level}] {event.message}")
        if job.status in TERMINAL:
            if bar is not None:
                bar.close()
            print(f"{job.id}: {job.status}" + (f" ({job.fine_tuned_model})" if job.fine_tuned_model else ""))
            return 0 if job.status == "succeeded" else 1
        time.sleep(poll_seconds)
