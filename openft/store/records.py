"""Turning a row into the values of a record dataclass."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import RowMapping


def row_values(record_type: Any, row: RowMapping, json_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """The row's value for each field of `record_type`, with `json_columns` decoded (NULL stays None)."""
    values = {name: row[name] for name in record_type.__dataclass_fields__}
    for name in json_columns:
        values[name] = json.loads(values[name]) if values[name] is not None else None
    return values
