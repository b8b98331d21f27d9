"""Training-data checks, run while a job is `validating_files` (and by `openft data check`).

The file is read a line at a time, so memory stays bounded whatever its size. Each problem names
the example by its 1-based line number and the rule it breaks, in OpenAI's wording:
"The job failed due to an invalid training file. Invalid file format. Example at line 3 …".
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    examples_without_system: int = 0
    examples_without_assistant: int = 0
    lines: list[int] = field(default_factory=list)


def read_examples(path: Path, param: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, example) for each non-blank line; raises DataError on framing problems."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as error:
                raise _invalid(
                    param, number, f"is not valid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as error:
                raise _invalid(
                    param, number, f"is not valid JSON ({error.msg} at column {error.colno})"
                ) from None
            if isinstance(example, list) and number == 1:
                raise _invalid(
                    param, number, "is a JSON array; the file must be JSONL: one JSON object per line"
                )
            if not isinstance(example, dict):
                raise _invalid(param, number, f"is a JSON {type(example).__name__}, not an object")
            yield number, example


def check_file(path: Path, param: str, *, min_examples: int, expected: Format = "chat") -> DataSummary:
    """Checks every example of a training or validation file; raises DataError at the first problem."""
    summary = DataSummary()
    for number, example in read_examples(path, param):
        found = detect_format(example)
        if found is None:
            raise _invalid(
                param,
                number,
                "has neither 'messages' (chat format) nor 'prompt' and 'completion' (legacy format)",
            )
        if summary.format is None:
            summary.format = found
        elif found != summary.format:
            raise _invalid(
                param,
                number,
                f"is in the {FORMAT_NAMES[found]} format, but earlier examples are in the "
                f"{FORMAT_NAMES[summary.format]} format; a file must use one format",
            )
        check_example(example, found, number, param)
        summary.n_examples += 1
        if found == "chat":
            roles = [message.get("role") for message in example["messages"]]
            summary.examples_without_system += "system" not in roles and "developer" not in roles
    if summary.format == "preference" and expected != "preference":
        raise DataError(
            _code(param),
            f"{_prefix(param)} Invalid file format. The file is in the preference (DPO) format "
            "(input, preferred_output, non_preferred_output), but the job uses the 'supervised' method; "
            "use chat messages, or method type 'dpo'.",
            param,
        )
    if param == "training_file" and summary.n_examples < min_examples:
        raise DataError(
            "invalid_n_examples",
            f"Training file has {summary.n_examples} example(s), "
            f"but must have at least {min_examples} examples",
            param,
        )
    if summary.n_examples == 0:
        raise DataError(
            _code(param), f"{_prefix(param)} Invalid file format. The file has no examples.", param
        )
    return summary


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
        raise _invalid(
            param, number, "has no assistant message to learn from (every example needs one with weight 1)"
        )


def check_message(message: Any, number: int, index: int, param: str) -> None:
    where = f"message {index}"
    if not isinstance(message, dict):
        raise _invalid(param, number, f"{where} is not an object")
    role = message.get("role")
    if role is None:
        raise _invalid(param, number, f"{where} is missing 'role'")
    if role not in ROLES:
        raise _invalid(
            param, number, f"{where} has an unknown role {role!r} (expected one of {', '.join(ROLES)})"
        )
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
        raise _invalid(
            param, number, f"{where} has content that is neither a string nor a list of text parts"
        )
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise _invalid(
                param, number, f'{where} has a content part that is not {{"type": "text", "text": …}}'
            )


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
            raise _invalid(
                param, number, f"{where} has a tool call whose arguments are not valid JSON"
            ) from None


def _code(param: str) -> str:
    return "invalid_validation_file" if param == "validation_file" else "invalid_training_file"


def _prefix(param: str) -> str:
    which = "validation" if param == "validation_file" else "training"
    return f"The job failed due to an invalid {which} file."


def _invalid(param: str, number: int, problem: str) -> DataError:
    return DataError(
        _code(param), f"{_prefix(param)} Invalid file format. Example at line {number} {problem}.", param
    )
