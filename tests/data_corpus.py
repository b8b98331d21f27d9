"""Training files that break one rule each (with the line the error must name), and awkward files
that are valid. Shared by the API, service and CLI tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris."}
GOOD = {"messages": [USER, ANSWER]}


def lines(*examples: object, ending: str = "\n") -> bytes:
    return ending.join(json.dumps(example, ensure_ascii=False) for example in examples).encode() + ending.encode()


def good(count: int) -> bytes:
    return lines(*[GOOD] * count)


@dataclass(frozen=True)
class Broken:
    name: str
    content: bytes
    code: str
    line: int | None  # the line the message must name; None for whole-file rules


BROKEN = [
    Broken("invalid_utf8", good(3) + b'{"messages": "\xff\xfe"}\n' + good(8), "invalid_training_file", 4),
    Broken("json_array", json.dumps([GOOD] * 12).encode(), "invalid_training_file", 1),
    Broken("not_an_object", good(5) + b'"just a string"\n' + good(6), "invalid_training_file", 6),
    Broken("invalid_json", good(2) + b'{"messages": [}\n' + good(9), "invalid_training_file", 3),
    Broken("messages_not_a_list", good(9) + lines({"messages": "hello"}), "invalid_training_file", 10),
    Broken("messages_empty", lines({"messages": []}) + good(10), "invalid_training_file", 1),
    Broken(
        "unknown_role",
        good(4) + lines({"messages": [{"role": "robot", "content": "x"}, ANSWER]}) + good(6),
        "invalid_training_file",
        5,
    ),
    Broken("missing_role", good(10) + lines({"messages": [{"content": "x"}, ANSWER]}), "invalid_training_file", 11),
    Broken("missing_content", lines({"messages": [{"role": "user"}, ANSWER]}) + good(10), "invalid_training_file", 1),
    Broken(
        "image_content",
        good(7)
        + lines({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, ANSWER]})
        + good(3),
        "invalid_training_file",
        8,
    ),
    Broken(
        "content_not_text",
        good(1) + lines({"messages": [{"role": "user", "content": 42}, ANSWER]}) + good(9),
        "invalid_training_file",
        2,
    ),
    Broken(
        "tool_call_bad_arguments",
        good(10)
        + lines(
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                        ],
                    },
                ]
            }
        ),
        "invalid_training_file",
        11,
    ),
    Broken(
        "weight_two",
        good(3) + lines({"messages": [USER, {**ANSWER, "weight": 2}]}) + good(7),
        "invalid_training_file",
        4,
    ),
    Broken(
        "weight_on_user", good(10) + lines({"messages": [{**USER, "weight": 1}, ANSWER]}), "invalid_training_file", 11
    ),
    Broken("no_assistant", good(6) + lines({"messages": [USER]}) + good(4), "invalid_training_file", 7),
    Broken(
        "only_weight_zero",
        good(6) + lines({"messages": [USER, {**ANSWER, "weight": 0}]}) + good(4),
        "invalid_training_file",
        7,
    ),
    Broken("neither_format", good(10) + lines({"text": "what is this"}), "invalid_training_file", 11),
    Broken("mixed_formats", good(5) + lines({"prompt": "a", "completion": "b"}) + good(5), "invalid_training_file", 6),
    Broken(
        "dpo_file",
        lines(
            *[
                {
                    "input": {"messages": [USER]},
                    "preferred_output": [ANSWER],
                    "non_preferred_output": [{"role": "assistant", "content": "Lyon."}],
                }
            ]
            * 10
        ),
        "invalid_training_file",
        1,
    ),
    Broken("tools_not_a_list", good(9) + lines({**GOOD, "tools": "f"}), "invalid_training_file", 10),
    Broken(
        "deeply_nested", good(10) + b'{"messages": ' + b"[" * 5_000 + b"]" * 5_000 + b"}\n", "invalid_training_file", 11
    ),
    Broken("too_few_examples", good(7), "invalid_n_examples", None),
]

TOOL_CALL_EXAMPLE = {
    "messages": [
        {"role": "system", "content": "You can look up the weather."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
        {"role": "assistant", "content": "It is 21 °C in Paris."},
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
}
MULTI_TURN = {
    "messages": [
        {"role": "developer", "content": "Be brief."},
        USER,
        {"role": "assistant", "content": "Paris.", "weight": 0},
        {"role": "user", "content": [{"type": "text", "text": "And of "}, {"type": "text", "text": "Japan?"}]},
        {"role": "assistant", "content": "Tokyo.", "weight": 1},
    ]
}
UNICODE = {
    "messages": [{"role": "user", "content": "Ça va? 你好 🙂"}, {"role": "assistant", "content": "Très bien! 👍"}]
}

VALID = {
    "crlf_and_blank_lines": lines(*[GOOD] * 10, ending="\r\n") + b"\r\n\r\n",
    "bom": b"\xef\xbb\xbf" + good(10),
    "unicode": lines(*[UNICODE] * 10),
    "tool_calls": lines(*[TOOL_CALL_EXAMPLE] * 10),
    "multi_turn_weight_zero": lines(*[MULTI_TURN] * 10),
    "legacy_prompt_completion": lines(*[{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(10)]),
}

# Every awkward feature of a chat file at once (BOM, CRLF, blank lines, unicode, tools, multi-turn,
# weight 0, developer role, text parts), and the legacy format: the two files a job can be given.
ALL_AWKWARD_CHAT = b"\xef\xbb\xbf" + lines(*[UNICODE, TOOL_CALL_EXAMPLE, MULTI_TURN, GOOD] * 3, ending="\r\n") + b"\r\n"
LEGACY = VALID["legacy_prompt_completion"]
