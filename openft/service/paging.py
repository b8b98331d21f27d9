"""The one answer to a list cursor that names nothing in the list."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from openft.errors import InvalidRequest
from openft.store import UnknownCursor


@contextmanager
def known_cursor(after: str | None, what: str) -> Iterator[None]:
    try:
        yield
    except UnknownCursor:
        raise InvalidRequest(f"No such {what}: {after}", param="after", code="invalid_value") from None
