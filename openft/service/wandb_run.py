"""The Weights & Biases integration: whether this server can log to W&B (checked when a job is
created), and the W&B run of one training run (in the training child).

A job with `integrations: [{"type": "wandb", "wandb": {project, entity?, name?, tags?}}]` gets a
W&B run named as OpenAI names it: id and default name the job's id, tags `openai/finetune`,
`openai/{base model}`, `openai/{job id}` and the user's, the job's hyperparameters as its config,
and one history row per step with the keys of the job's metrics events. W&B itself is read from
its own environment variables (`WANDB_API_KEY`, `WANDB_BASE_URL`, `WANDB_MODE`, `WANDB_DIR`, ...).

W&B never holds training up: `wandb` is imported, and every call into it made, on a thread of the
run's own, fed through a queue. A run that can't start or fails mid-way is reported in a `warn`
event and training carries on without it; finishing the run waits `FINISH_TIMEOUT_SECONDS` at most.
"""

from __future__ import annotations

import logging
import netrc
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from openft.errors import InvalidRequest

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
OFFLINE_MODES = ("offline", "dryrun")
MAX_TAG_CHARS = 64  # W&B's limit on one tag
FINISH_TIMEOUT_SECONDS = 20.0  # what finishing a run (uploading what is left) may add to a job's end
JOIN_MARGIN_SECONDS = 5.0
MAX_ERROR_CHARS = 300
AVAILABILITY = ("auto", "enabled", "disabled")  # OPENFT_WANDB_INTEGRATION
EventSink = Callable[[str, str, dict[str, Any] | None], None]  # (message, level, data)


# --- may a job ask for W&B? (the API process) -------------------------------------------------


def unavailable_reason(setting: str = "auto", environ: Mapping[str, str] | None = None) -> str | None:
    """Why a job can't have a wandb integration on this server, or None when it can.

    `auto`: W&B counts as configured with `WANDB_MODE=offline`, with `WANDB_API_KEY`, or with the
    key `wandb login` keeps in ~/.netrc for the host of `WANDB_BASE_URL`; `WANDB_MODE=disabled`
    (W&B's "make every call a no-op") counts as not configured, since the job would log nothing.
    `enabled` trusts the operator; `disabled` refuses every wandb integration."""
    env = os.environ if environ is None else environ
    if setting == "disabled":
        return "Weights and Biases is turned off on this server (OPENFT_WANDB_INTEGRATION=disabled)."
    if setting == "enabled":
        return None
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return "Weights and Biases is disabled on this server (WANDB_MODE=disabled)."
    if mode in OFFLINE_MODES or env.get("WANDB_API_KEY", "").strip() or _netrc_has_key(env):
        return None
    return (
        "Weights and Biases is not configured on this server: set WANDB_API_KEY (and WANDB_BASE_URL for a "
        "self-hosted W&B), or WANDB_MODE=offline to write runs locally, where openft runs."
    )


def check_integrations(integrations: Iterable[Any] | None, setting: str = "auto") -> None:
    """400 `integrations` for a wandb integration this server can't honour, so the client learns at
    once rather than from a run that logs nowhere."""
    wandb_integrations = [item for item in integrations or [] if getattr(item, "type", None) == "wandb"]
    if not wandb_integrations:
        return
    if len(wandb_integrations) > 1:
        raise InvalidRequest(
            f"A fine-tuning job can have one wandb integration; this request has {len(wandb_integrations)}.",
            param="integrations",
            code="invalid_value",
        )
    reason = unavailable_reason(setting)
    if reason is not None:
        raise InvalidRequest(
            f"The wandb integration can't be used: {reason} Create the job without `integrations`, or ask "
            "the server's operator to set W&B up.",
            param="integrations",
            code="integration_not_available",
        )


def _netrc_has_key(env: Mapping[str, str]) -> bool:
    host = urlparse(env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).hostname
    path = env.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host or "") if os.path.isfile(path) else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


# --- the run (the training child) ---------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """What `wandb.init` gets, decided from the job alone (picklable, testable without W&B)."""

    id: str
    project: str
    name: str
    entity: str | None
    tags: list[str]
    config: dict[str, Any]
    dir: str | None  # None: W&B's own choice (WANDB_DIR)


def run_options(
    job: Any, *, base_model: str, train_config: Mapping[str, Any], data_dir: Path | None, start: Any = None
) -> RunOptions | None:
    """The W&B run of `job` (a JobRecord), or None when it has no wandb integration."""
    integration = next((item for item in job.integrations or [] if item.get("type") == "wandb"), None)
    if integration is None:
        return None
    wandb = integration.get("wandb") or {}
    tags = ["openai/finetune", f"openai/{base_model}", f"openai/{job.id}", *(wandb.get("tags") or [])]
    resolved = (job.hyperparameters or {}).get("resolved") or (job.hyperparameters or {}).get("requested") or {}
    config: dict[str, Any] = {
        "fine_tuning_job_id": job.id,
        "model": getattr(job, "model", base_model),  # as the job shows it (a fine-tuned model, when continued)
        "base_model": base_model,
        "method": getattr(job, "method_type", "supervised"),
        "hyperparameters": dict(resolved),
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "suffix": job.suffix,
        "seed": job.seed,
        "learning_rate": train_config.get("learning_rate"),
        "lora_r": train_config.get("lora_r"),
        "lora_alpha": train_config.get("lora_alpha"),
        "max_seq_len": train_config.get("max_seq_len"),
    }
    if start is not None:
        config.update(total_steps=start.total_steps, n_train_examples=start.n_train_examples, device=start.device)
    return RunOptions(
        id=job.id,  # as OpenAI: the run's id is the job's, so a resumed job continues the same run
        project=wandb["project"],
        name=wandb.get("name") or job.id,
        entity=wandb.get("entity"),
        tags=_unique(tag[:MAX_TAG_CHARS] for tag in tags if tag),
        config=config,
        dir=None if os.environ.get("WANDB_DIR") else (str(data_dir) if data_dir else None),
    )


class WandbRun:
    """One W&B run, driven from a thread of its own: `log` and `finish` never wait on W&B (finish
    at most `timeout`), and whatever W&B does wrong ends up in a `warn` event, not in training."""

    def __init__(self, options: RunOptions, on_event: EventSink) -> None:
        self.options = options
        self.on_event = on_event
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._broken = False
        self._started = threading.Event()  # wandb.init has returned, or failed
        self._thread = threading.Thread(target=self._serve, name=f"wandb-{options.id}", daemon=True)
        self._thread.start()

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self._broken:
            self._queue.put(("log", (step, {key: value for key, value in metrics.items() if value is not None})))

    def finish(self, exit_code: int = 0, timeout: float = FINISH_TIMEOUT_SECONDS) -> bool:
        """Finishes the run (also after a cancel or a pause: a resumed job resumes it), waiting for
        W&B `timeout` seconds at most. False unless W&B ran and finished cleanly: the process should
        then exit without running W&B's exit hooks, which would wait on it again."""
        self._queue.put(("finish", exit_code))
        self._thread.join(timeout + JOIN_MARGIN_SECONDS)  # W&B's own finish_timeout should end it first
        if self._thread.is_alive():
            self._broken = True
            if not self._started.is_set():
                self._warn(
                    "Weights and Biases run had not started when training ended (is W&B reachable?); giving "
                    "up on it. Training is not affected."
                )
            else:
                self._warn(
                    f"Weights and Biases did not finish the run within {timeout:.0f} s; what it had not "
                    "uploaded stays in the run's local directory (upload it with `wandb sync`). Training is "
                    "not affected."
                )
        return not self._broken

    # -- the thread --------------------------------------------------------------------------

    def _serve(self) -> None:
        run = self._init()
        self._started.set()
        while True:
            kind, payload = self._queue.get()
            if kind == "finish":
                if run is not None:
                    self._finish(run, payload)
                return
            if run is not None and not self._broken:
                step, metrics = payload
                self._call("logging", run.log, metrics, step=step)

    def _init(self) -> Any:
        options = self.options
        try:
            import wandb  # only a job with the integration loads it

            run = wandb.init(
                id=options.id,
                resume="allow",
                project=options.project,
                entity=options.entity,
                name=options.name,
                tags=options.tags,
                config=options.config,
                dir=options.dir,
                job_type="fine-tune",
                settings=wandb.Settings(
                    console="off",
                    quiet=True,
                    disable_git=True,
                    save_code=False,
                    finish_timeout=FINISH_TIMEOUT_SECONDS,  # then the run is marked crashed; `wandb sync` has the rest
                    finish_timeout_raises=True,
                ),
            )
        except BaseException as error:  # wandb raises its own errors, and may exit or time out
            self._broken = True
            self._warn(f"Weights and Biases run could not be started: {_summary(error)}. Training goes on without it.")
            return None
        if getattr(run, "disabled", False):
            self._broken = True
            self._warn("Weights and Biases is disabled (WANDB_MODE=disabled): this job logs nothing to it.")
            return None
        url = None if getattr(run, "offline", False) else getattr(run, "url", None)
        run_dir = _run_dir(run)
        data = {"id": run.id, "name": options.name, "project": options.project, "entity": options.entity}
        if url:
            message = f"Logging to Weights and Biases: {url}"
        else:
            message = f"Logging to Weights and Biases offline in {run_dir} (upload it with `wandb sync {run_dir}`)"
        self._event(message, "info", {"wandb": {**data, "url": url, "dir": run_dir}})
        return run

    def _finish(self, run: Any, exit_code: int) -> None:
        try:
            run.finish(exit_code=exit_code)
        except BaseException as error:  # TimeoutError after finish_timeout, or W&B's own
            self._broken = True
            run_dir = _run_dir(run)
            self._warn(
                f"Weights and Biases could not finish the run: {_summary(error)}. What it had not uploaded stays "
                f"in {run_dir} (upload it with `wandb sync {run_dir}`). Training is not affected."
            )

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        try:
            call(*args, **kwargs)
        except BaseException as error:
            self._broken = True
            self._warn(
                f"Weights and Biases failed while {what} the run: {_summary(error)}. Training goes on; the W&B "
                "run misses what followed."
            )
            return False
        return True

    def _warn(self, message: str) -> None:
        log.warning("%s: %s", self.options.id, message)
        self._event(message, "warn", None)

    def _event(self, message: str, level: str, data: dict[str, Any] | None) -> None:
        try:
            self.on_event(message, level, data)
        except Exception:  # the database: nothing W&B's thread could do about it
            log.exception("could not record a W&B event of %s", self.options.id)


def _run_dir(run: Any) -> str | None:
    """The run's own directory (`.../wandb/offline-run-…`, what `wandb sync` takes)."""
    settings = getattr(run, "settings", None)
    for candidate in (getattr(run, "sync_dir", None), getattr(settings, "sync_dir", None), getattr(run, "dir", None)):
        if candidate:
            path = Path(candidate)
            return str(path.parent if path.name == "files" else path)
    return None


def _summary(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
