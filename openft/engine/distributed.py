"""One training run in several processes on one machine: DDP over gloo (CPU) or NCCL (one GPU each).

The caller's process is rank 0: it runs `train` with the caller's callbacks, so whatever supervises
it (a worker's pipe, signals, the run's events) sees one process as before. Ranks 1..n-1 are
subprocesses (`python -m openft.engine.peer`) started here: they train with no callbacks, write
nothing, and follow rank 0's stop requests. Each peer reads its run from its stdin and writes two
lines to its stdout: "joined" once it reached rank 0's store, then its result. A peer whose rank 0
dies exits (its stdin closes); when a peer dies, rank 0's next collective raises (gloo at once;
NCCL after its timeout).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from openft.engine.devices import resolve_device
from openft.engine.train import TrainCallbacks, TrainConfig, TrainResult, train

logger = logging.getLogger(__name__)
HOST = "127.0.0.1"  # the ranks of a run share a machine
JOIN_TIMEOUT = timedelta(minutes=5)  # a peer imports torch and connects well within this
JOINED = "joined"
PEER_EXIT_SECONDS = 60.0  # after its last step, a peer only tears down


def resolve_processes(setting: str | int, device: str) -> int:
    """How many processes train a job: "auto" is one per GPU on CUDA and one on a CPU (where
    several ranks only share the same cores); a number forces that many."""
    if setting == "auto":
        return max(torch.cuda.device_count(), 1) if resolve_device(device).type == "cuda" else 1
    count = int(setting)
    if count < 1:
        raise ValueError(f"training processes must be at least 1, not {count}")
    return count


def train_in_processes(config: TrainConfig, callbacks: TrainCallbacks | None, processes: int) -> TrainResult:
    """`train` as rank 0 of `processes` ranks (plain `train` for 1): every rank takes its share of
    each batch of `config.batch_size` examples, so the losses are those of one process training the
    same batches (to float rounding). Raises if a rank ended otherwise than rank 0."""
    if processes == 1:
        return train(config, callbacks)
    with peers(config, processes) as group:
        result = train(config, callbacks)
    ours = (result.status, result.steps)
    if any(theirs != ours for theirs in group.results):
        raise RuntimeError(f"the ranks ended apart: rank 0 {ours}, the others {group.results}")
    return result


@dataclass
class Peers:
    processes: list[subprocess.Popen[bytes]]
    results: list[tuple[str, int]] = field(default_factory=list)  # (status, steps) of ranks 1.., once done


@contextmanager
def peers(config: TrainConfig, processes: int) -> Iterator[Peers]:
    """Starts ranks 1..processes-1 of a run of `config` and makes this process rank 0 of their
    process group; inside, run `train(config, ...)`. On leaving normally the peers' results are in
    `.results`; on an error they are killed."""
    backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
    threads = torch.get_num_threads()
    per_rank = max(1, threads // processes)  # the ranks share the machine's cores
    store = dist.TCPStore(HOST, 0, processes, is_master=True, wait_for_workers=False, timeout=JOIN_TIMEOUT)
    payload = {"config": config, "world": processes, "port": store.port, "backend": backend, "threads": per_rank}
    group = Peers([_start_peer(payload, rank) for rank in range(1, processes)])
    torch.set_num_threads(per_rank)
    try:
        _await_peers(group.processes)
        dist.init_process_group(backend, store=store, rank=0, world_size=processes)
        pids = [peer.pid for peer in group.processes]
        logger.info(
            "training in %d processes (%s): ranks 1 to %d are processes %s", processes, backend, processes - 1, pids
        )
        yield group
        dist.destroy_process_group()
        group.results = [_result(peer, rank) for rank, peer in enumerate(group.processes, start=1)]
    except BaseException:
        for peer in group.processes:
            peer.kill()
        raise
    finally:
        torch.set_num_threads(threads)
        if dist.is_initialized():
            dist.destroy_process_group()
        for peer in group.processes:
            _close(peer)


def _start_peer(payload: dict[str, Any], rank: int) -> subprocess.Popen[bytes]:
    # stdin carries the run, then stays open: its end is how a peer learns rank 0 is gone.
    process = subprocess.Popen(
        [sys.executable, "-m", "openft.engine.peer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    process.stdin.write(pickle.dumps({**payload, "rank": rank}))
    process.stdin.flush()
    return process


def _await_peers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Waits until every peer has reached the store, failing at once if one exits first (its stdout
    ends without the line)."""
    for rank, process in enumerate(processes, start=1):
        assert process.stdout is not None
        if process.stdout.readline().decode(errors="replace").strip() != JOINED:
            raise RuntimeError(f"training rank {rank} exited with code {process.wait()} before it joined")


def _result(process: subprocess.Popen[bytes], rank: int) -> tuple[str, int]:
    code = process.wait(PEER_EXIT_SECONDS)
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace").strip()
    if code != 0 or not output:
        raise RuntimeError(f"training rank {rank} exited with code {code}")
    result = json.loads(output.splitlines()[-1])
    return str(result["status"]), int(result["steps"])


def _close(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    try:
        process.wait(PEER_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def peer_main() -> None:
    """A peer rank (ranks 1..n-1): the run comes on stdin, its result goes to stdout as one JSON line."""
    payload = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_exit_with_rank0, args=(sys.stdin.fileno(),), daemon=True).start()
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the result
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s rank {payload['rank']} %(levelname)s: %(message)s")
    torch.set_num_threads(payload["threads"])
    rank, world = payload["rank"], payload["world"]
    store = dist.TCPStore(HOST, payload["port"], world, is_master=False, timeout=JOIN_TIMEOUT)
    result_out.write(JOINED + "\n")
    result_out.flush()
    dist.init_process_group(payload["backend"], store=store, rank=rank, world_size=world)
    try:
        result = train(payload["config"])
    finally:
        dist.destroy_process_group()
    result_out.write(json.dumps({"status": result.status, "steps": result.steps}) + "\n")
    result_out.close()


def _exit_with_rank0(stdin: int) -> None:
    # The raw descriptor, not sys.stdin: a daemon thread blocked holding a buffer's lock would
    # abort the interpreter's shutdown at the end of a normal run.
    while os.read(stdin, 4096):  # empty once rank 0 closes the pipe, or dies
        pass
    os._exit(1)  # whatever this rank was doing is rank 0's run, and it is over
