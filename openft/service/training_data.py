"""Training-data checks, run while a job is `validating_files` (and by `openft data check`).

The file is read a line at a time, so memory stays bounded whatever its size. Each problem names
the example by its 1-based line number and the rule it breaks, in OpenAI's wording:
"The job failed due to an invalid training file. Invalid file format. Example at line 3 …".
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROLES = ("system", "developer", "user", "assistant", "tool")
Format = Literal["chat", "completion", "preference"]
FORMAT_NAMES = {"chat": "chat messages", "completion": "prompt/completion", "preference": "preference (DPO)"}


class DataError(Exception):
    """A file that can't be trained on; `code` and `param` go into the job's `error`."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class DataSummary:
    n_examples: int = 0
    format: Format | None = None


@dataclass(frozen=True)
class Line:
    """One non-blank line of a file: its example, or the problem that keeps it from being one."""

    number: int
    example: dict[str, Any] | None
    format: Format | None
    error: DataError | None


def scan(path: Path, param: str, expected: Format = "chat", file_id: str = "") -> Iterator[Line]:
    """Checks every line, a line at a time (memory stays bounded), carrying on past problems.
    `expected` is "preference" for a DPO job, else chat or prompt/completion; `file_id` names the
    file in the error for a file in the wrong format."""
    first_format: Format | None = None
    for number, example, framing_error in _parse_lines(path, param):
        if framing_error is not None or example is None:
            yield Line(number, None, None, framing_error)
            continue
        found = detect_format(example)
        error = _format_error(found, first_format, number, param)
        if error is None and found is not None:
            first_format = first_format or found
            error = _example_error(example, found, number, param)
        if error is None and found == "preference" and expected != "preference":
            error = DataError(
                _code(param),
                f"{_prefix(param)} Invalid file format. Example at line {number} is in the preference (DPO) "
                "format (input, preferred_output, non_preferred_output), but the job uses the 'supervised' "
                "method; use chat messages, or method type 'dpo'.",
                param,
            )
        if error is None and found is not None and found != "preference" and expected == "preference":
            # OpenAI's words (trailing space included); its format names are fine-tune-chat and fine-tune.
            kind = "fine-tune-chat" if found == "chat" else "fine-tune"
            error = DataError(
                _code(param),
                f"{_prefix(param)} Invalid file format. Input file {file_id} is in the {kind} format, but the "
                "specified fine-tuning job is not using 'supervised' as the training method (provided "
                "method=dpo). ",
                param,
            )
        yield Line(number, example if error is None else None, found, error)


def first_format(path: Path) -> Format | None:
    """The format of the file's first example (what `openft data check` checks the file as)."""
    for _, example, _ in _parse_lines(path, "training_file"):
        if example is not None:
            return detect_format(example)
    return None


def check_file(
    path: Path,
    param: str,
    *,
    min_examples: int,
    expected: Format = "chat",
    file_id: str = "",
    on_example: Callable[[int, dict[str, Any]], None] | None = None,
) -> DataSummary:
    """Checks a training or validation file; raises DataError at the first problem."""
    summary = DataSummary()
    for line in scan(path, param, expected, file_id):
        if line.error is not None:
            raise line.error
        assert line.example is not None
        summary.n_examples += 1
        summary.format = line.format
        if on_example is not None:
            on_example(line.number, line.example)
    if param == "training_file" and summary.n_examples < min_examples:
        raise DataError(
            "invalid_n_examples",
            f"Training file has {summary.n_examples} example(s), but must have at least {min_examples} examples",
            param,
        )
    if summary.n_examples == 0:
        raise DataError(_code(param), f"{_prefix(param)} Invalid file format. The file has no examples.", param)
    return summary


def _parse_lines(path: Path, param: str) -> Iterator[tuple[int, dict[str, Any] | None, DataError | None]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield (
                    number,
                    None,
                    _invalid(param, number, f"is not valid UTF-8 ({error.reason} at byte {error.start})"),
                )
                continue
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as error:
                problem = f"is not valid JSON ({error.msg} at column {error.colno})"
                yield number, None, _invalid(param, number, problem)
                continue
            except RecursionError:
                yield number, None, _invalid(param, number, "is nested too deeply to be an example")
                continue
            if isinstance(example, list) and number == 1:
                problem = "is a JSON array; the file must be JSONL: one JSON object per line"
                yield number, None, _invalid(param, number, problem)
            elif not isinstance(example, dict):
                yield (
                    number,
                    None,
                    _invalid(param, number, f"is a JSON {type(example).__name__}, not an object"),
                )
            else:
                yield number, example, None


def _format_error(found: Format | None, first: Format | None, number: int, param: str) -> DataError | None:
    if found is None:
        return _invalid(
            param,
            number,
            "has neither 'messages' (chat format) nor 'prompt' and 'completion' (legacy format)",
        )
    if first is not None and found != first:
        return _invalid(
            param,
            number,
            f"is in the {FORMAT_NAMES[found]} format, but earlier examples are in the "
            f"{FORMAT_NAMES[first]} format; a file must use one format",
        )
    return None


def _example_error(example: dict[str, Any], found: Format, number: int, param: str) -> DataError | None:
    try:
        check_example(example, found, number, param)
    except DataError as error:
        return error
    return None


def detect_format(example: dict[str, Any]) -> Format | None:
    if "messages" in example:
        return "chat"
    if "preferred_output" in example or "non_preferred_output" in example:
        return "preference"
    if "prompt" in example and "completion" in example:
        return "completion"
    return None


def check_example(example: dict[str, Any], found: Format, number: int, param: str) -> None:
    if found == "completion":
        for key in ("prompt", "completion"):
            if not isinstance(example[key], str):
                raise _invalid(param, number, f"has a '{key}' that is not a string")
        if not example["completion"]:
            raise _invalid(param, number, "has an empty 'completion': there is nothing to learn")
        return
    if found == "preference":
        check_preference(example, number, param)
        return
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        raise _invalid(param, number, "has 'messages' that is not a non-empty list")
    for key in ("tools", "functions"):
        if key in example and not isinstance(example[key], list):
            raise _invalid(param, number, f"has '{key}' that is not a list")
    for index, message in enumerate(messages, start=1):
        check_message(message, number, index, param)
    learnable = [m for m in messages if m["role"] == "assistant" and m.get("weight", 1) == 1]
    if not learnable:
        raise _invalid(param, number, "has no assistant message to learn from (every example needs one with weight 1)")


def check_preference(example: dict[str, Any], number: int, param: str) -> None:
    """OpenAI's preference format: an input conversation (tools allowed) that doesn't end with an
    assistant turn, and exactly one assistant message in each of the two outputs."""
    source = example.get("input")
    if not isinstance(source, dict):
        raise _invalid(param, number, "has no 'input' object with the conversation to answer")
    messages = source.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(param, number, "has 'input.messages' that is not a non-empty list")
    for key in ("tools", "functions"):
        if key in source and not isinstance(source[key], list):
            raise _invalid(param, number, f"has 'input.{key}' that is not a list")
    for index, message in enumerate(messages, start=1):
        check_message(message, number, index, param)
    if messages[-1]["role"] == "assistant":
        raise _invalid(param, number, "has 'input.messages' ending with an assistant message; the outputs answer it")
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if not isinstance(output, list) or len(output) != 1:
            raise _invalid(param, number, f"has '{key}' that is not a list of exactly one assistant message")
        message = output[0]
        check_message(message, number, 1, param)
        if message["role"] != "assistant":
            raise _invalid(param, number, f"has a '{key}' message with role {message['role']!r}, not 'assistant'")
        if message.get("tool_calls") or not message.get("content"):
            raise _invalid(param, number, f"has a '{key}' message without text content")


def check_message(message: Any, number: int, index: int, param: str) -> None:
    where = f"message {index}"
    if not isinstance(message, dict):
        raise _invalid(param, number, f"{where} is not an object")
    role = message.get("role")
    if role is None:
        raise _invalid(param, number, f"{where} is missing 'role'")
    if role not in ROLES:
        raise _invalid(param, number, f"{where} has an unknown role {role!r} (expected one of {', '.join(ROLES)})")
    if "weight" in message:
        if role != "assistant":
            raise _invalid(param, number, f"{where} has 'weight', which only assistant messages may carry")
        if message["weight"] not in (0, 1) or isinstance(message["weight"], bool):
            raise _invalid(param, number, f"{where} has weight {message['weight']!r}; weight must be 0 or 1")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        check_tool_calls(tool_calls, number, where, role, param)
    content = message.get("content")
    if content is None:
        if role == "assistant" and tool_calls:
            return
        raise _invalid(param, number, f"{where} is missing 'content'")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise _invalid(param, number, f"{where} has content that is neither a string nor a list of text parts")
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise _invalid(param, number, f'{where} has a content part that is not {{"type": "text", "text": …}}')


def check_tool_calls(tool_calls: Any, number: int, where: str, role: str, param: str) -> None:
    if role != "assistant":
        raise _invalid(param, number, f"{where} has 'tool_calls', which only assistant messages may carry")
    if not isinstance(tool_calls, list) or not tool_calls:
        raise _invalid(param, number, f"{where} has 'tool_calls' that is not a non-empty list")
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid(param, number, f"{where} has a tool call without a function name")
        try:
            json.loads(function.get("arguments", ""))
        except (TypeError, json.JSONDecodeError):
            raise _invalid(param, number, f"{where} has a tool call whose arguments are not valid JSON") from None


def _code(param: str) -> str:
    return "invalid_validation_file" if param == "validation_file" else "invalid_training_file"


def _prefix(param: str) -> str:
    which = "validation" if param == "validation_file" else "training"
    return f"The job failed due to an invalid {which} file."


def _invalid(param: str, number: int, problem: str) -> DataError:
    return DataError(_code(param), f"{_prefix(param)} Invalid file format. Example at line {number} {problem}.", param)
