"""`openft data check`: everything a user wants to know about a training file before spending
hours on it, from the same checks and token counts the service uses."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openft.config import Settings
from openft.service import hyperparameters, training_data
from openft.service.models import BaseModelRegistry

MAX_ERRORS_LISTED = 100
_COUNTERS: dict[Path, Any] = {}  # one tokenizer per model for a run over many files


@dataclass
class LineError:
    line: int
    code: str
    message: str


@dataclass
class TokenDistribution:
    min: int
    max: int
    mean: float
    p50: float
    p90: float


@dataclass
class DataReport:
    file: str
    model: str
    format: str | None
    n_examples: int = 0
    n_errors: int = 0
    errors: list[LineError] = field(default_factory=list)
    tokens: TokenDistribution | None = None
    # Preference (DPO) files: each sequence of the pairs, the input with one answer.
    preferred_tokens: TokenDistribution | None = None
    non_preferred_tokens: TokenDistribution | None = None
    context_length: int = 0
    n_over_context: int = 0
    n_without_system: int = 0
    n_without_assistant: int = 0
    n_duplicates: int = 0
    n_epochs: int = 0
    trained_tokens: int = 0
    tokens_per_second: float | None = None
    estimated_seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(
    path: Path,
    *,
    model: str,
    count_tokens: Callable[[dict[str, Any]], int],
    context_length: int,
    count_pair: Callable[[dict[str, Any]], tuple[int, int]] | None = None,
    min_examples: int,
    epochs: int | None,
    param: str = "training_file",
) -> DataReport:
    """`param` is what the job would use the file as: "training_file" or "validation_file"."""
    report = DataReport(file=str(path), model=model, format=None, context_length=context_length)
    lengths: list[int] = []
    pairs: list[tuple[int, int]] = []
    seen: set[bytes] = set()
    # A file is checked as what its first example is: preference pairs for DPO, else supervised.
    expected: training_data.Format = "preference" if training_data.first_format(path) == "preference" else "chat"
    for line in training_data.scan(path, param, expected, path.name):
        if line.error is not None:
            report.n_errors += 1
            if len(report.errors) < MAX_ERRORS_LISTED:
                report.errors.append(LineError(line.number, line.error.code, line.error.message))
            continue
        assert line.example is not None
        report.format = report.format or line.format
        report.n_examples += 1
        lengths.append(count_tokens(line.example))
        if line.format == "preference" and count_pair is not None:
            pairs.append(count_pair(line.example))
        _note_roles(report, line.example)
        digest = hashlib.sha256(json.dumps(line.example, sort_keys=True).encode()).digest()
        report.n_duplicates += digest in seen
        seen.add(digest)
    if report.n_examples < min_examples:
        report.n_errors += 1
        report.errors.append(
            LineError(
                0,
                "invalid_n_examples",
                f"{param.replace('_', ' ').capitalize()} has {report.n_examples} example(s), but must have at least "
                f"{min_examples} examples",
            )
        )
    if lengths:
        _summarize_tokens(report, lengths, epochs)
    if pairs:
        report.preferred_tokens = _distribution(sorted(p for p, _ in pairs))
        report.non_preferred_tokens = _distribution(sorted(n for _, n in pairs))
    return report


def _note_roles(report: DataReport, example: dict[str, Any]) -> None:
    if "input" in example:  # a preference pair: its answers are assistant messages by the rules
        roles = {message.get("role") for message in example["input"]["messages"]}
        report.n_without_system += not roles & {"system", "developer"}
        return
    if "messages" not in example:
        return
    roles = {message.get("role") for message in example["messages"]}
    report.n_without_system += not roles & {"system", "developer"}
    report.n_without_assistant += "assistant" not in roles


def _summarize_tokens(report: DataReport, lengths: list[int], epochs: int | None) -> None:
    ordered = sorted(lengths)
    report.tokens = _distribution(ordered)
    report.n_over_context = sum(length > report.context_length for length in ordered)
    report.n_epochs = epochs or hyperparameters.auto_epochs(len(ordered))
    report.trained_tokens = report.n_epochs * sum(min(length, report.context_length) for length in ordered)
    if report.n_duplicates:
        report.problems.append(f"{report.n_duplicates} example(s) repeat an earlier one exactly")
    if report.n_over_context:
        report.problems.append(
            f"{report.n_over_context} example(s) are longer than {report.context_length} tokens and will be truncated"
        )


def _distribution(ordered: list[int]) -> TokenDistribution:
    return TokenDistribution(
        min=ordered[0],
        max=ordered[-1],
        mean=round(statistics.fmean(ordered), 1),
        p50=_percentile(ordered, 50),
        p90=_percentile(ordered, 90),
    )


def _percentile(ordered: list[int], percent: int) -> float:
    if len(ordered) == 1:
        return float(ordered[0])
    return round(statistics.quantiles(ordered, n=100, method="inclusive")[percent - 1], 1)


def add_estimate(report: DataReport, tokens_per_second: float) -> None:
    report.tokens_per_second = round(tokens_per_second, 1)
    report.estimated_seconds = round(report.trained_tokens / tokens_per_second, 1)


def format_report(report: DataReport) -> str:
    lines = [
        f"{report.file}: {report.n_examples} example(s), format {report.format or 'unknown'}, model {report.model}"
    ]
    if report.tokens:
        t = report.tokens
        lines.append(f"  tokens per example: min {t.min}, max {t.max}, mean {t.mean}, p50 {t.p50}, p90 {t.p90}")
        for label, pair_tokens in (
            ("preferred", report.preferred_tokens),
            ("non-preferred", report.non_preferred_tokens),
        ):
            if pair_tokens is not None:
                d = pair_tokens
                lines.append(f"    input + {label} answer: min {d.min}, max {d.max}, mean {d.mean}, p50 {d.p50}")
        lines.append(f"  longer than the context ({report.context_length} tokens): {report.n_over_context}")
        lines.append(f"  without a system message: {report.n_without_system}")
        lines.append(f"  without an assistant message: {report.n_without_assistant}")
        lines.append(f"  exact duplicates: {report.n_duplicates}")
        lines.append(f"  trained tokens (billed): {report.trained_tokens} over {report.n_epochs} epoch(s)")
    if report.estimated_seconds is not None:
        lines.append(
            f"  expected training time on this machine: {_duration(report.estimated_seconds)} "
            f"(measured {report.tokens_per_second} tokens/s)"
        )
    for problem in report.problems:
        lines.append(f"  warning: {problem}")
    if report.n_errors:
        lines.append(f"{report.n_errors} error(s):")
        for error in report.errors:
            where = f"line {error.line}" if error.line else "file"
            problem = error.message.split(" Invalid file format. ", 1)[-1]
            lines.append(f"  {where}: [{error.code}] {problem}")
        if report.n_errors > len(report.errors):
            lines.append(f"  … and {report.n_errors - len(report.errors)} more")
    else:
        lines.append("No errors: this file can be used for fine-tuning.")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def check_training_file(
    path: Path,
    *,
    model: str,
    epochs: int | None,
    measure: bool,
    settings: Settings,
    base_models: BaseModelRegistry,
    param: str = "training_file",
) -> DataReport:
    """The full report: checks and token counts with the model's tokenizer, and, when asked and the
    file is usable, the training time expected from a throughput measured on this machine. A
    validation file (`param="validation_file"`) needs one example, as a job's validation asks."""
    model_dir = base_models.local_directory(model)
    from openft.engine.counting import TokenCounter  # loads torch: only for this command, once the model is known

    counter = _COUNTERS.get(model_dir) or _COUNTERS.setdefault(model_dir, TokenCounter(model_dir))
    report = build_report(
        path,
        model=model,
        count_tokens=counter.count,
        count_pair=counter.count_pair,
        context_length=settings.max_seq_len,
        min_examples=settings.min_training_examples if param == "training_file" else 1,
        epochs=epochs,
        param=param,
    )
    if measure and report.n_examples and not report.n_errors:
        add_estimate(report, _throughput(path, model, model_dir, settings))
    return report


def _throughput(path: Path, model: str, model_dir: Path, settings: Settings) -> float:
    """Measured once per model and device, then kept in the data directory."""
    from openft.engine.throughput import measure_training_throughput

    cache = settings.data_dir / "throughput.json"
    key = f"{model}|{settings.training_device}|{settings.training_precision}"
    known: dict[str, float] = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        expected: training_data.Format = "preference" if training_data.first_format(path) == "preference" else "chat"
        lines = zip(training_data.scan(path, "training_file", expected), range(8), strict=False)
        # A preference pair is timed as the input with its preferred answer: a DPO step trains on
        # both answers, which the trained-token count already counts.
        examples = [_as_chat(line.example) for line, _ in lines if line.example is not None]
        known[key] = measure_training_throughput(
            model_dir,
            examples,
            max_seq_len=settings.max_seq_len,
            device=settings.training_device,
            precision=settings.training_precision,
        )
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    return known[key]


def _as_chat(example: dict[str, Any]) -> dict[str, Any]:
    if "input" not in example:
        return example
    return {"messages": [*example["input"]["messages"], *example["preferred_output"]]}
