"""Identifiers and timestamps in OpenAI's formats (`file-…`, `ftjob-…`, `ftckpt_…`)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` includes its separator: `file-`, `ftjob-`, `ftevent-`, `ftckpt_`, `upload_`."""
    return prefix + random_token(length)


def now() -> int:
    """Unix seconds, as every timestamp on the wire."""
    return int(time.time())
