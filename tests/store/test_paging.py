"""Cursor paging, identical on SQLite and PostgreSQL: by insertion order (`seq`), stable when rows
share a `created_at` second, scoped to the organization, with `after` naming the last row seen."""

from __future__ import annotations

import pytest

from openft import ids
from openft.store import Database, UnknownCursor
from openft.store import events as event_rows
from openft.store import files as file_rows
from openft.store.events import EventRecord
from openft.store.files import FileRecord
from tests.store.support import queue


def add_files(database: Database, organization: str, count: int, purpose: str = "fine-tune") -> list[str]:
    created_at = ids.now()  # all in the same second: only `seq` orders them
    records = [
        FileRecord(
            id=ids.new_id("file-", 22), organization=organization, filename=f"f{n}.jsonl", purpose=purpose,
            bytes=n, created_at=created_at, expires_at=None, status="processed", status_details=None,
            blob_key=f"files/{n}",
        )
        for n in range(count)
    ]  # fmt: skip
    with database.transaction() as connection:
        for record in records:
            file_rows.insert_file(connection, record)
    return [record.id for record in records]


def all_pages(database: Database, organization: str, order: str, limit: int, purpose: str | None = None) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        with database.transaction() as connection:
            page, has_more = file_rows.list_files(
                connection, organization, purpose=purpose, after=after, limit=limit, order=order
            )
        seen.extend(record.id for record in page)
        if not has_more:
            return seen
        assert len(page) == limit
        after = page[-1].id


def test_pages_walk_every_row_once_in_either_order(database: Database) -> None:
    created = add_files(database, "org-a", 11)
    add_files(database, "org-b", 3)  # another organization's rows are never listed
    assert all_pages(database, "org-a", "asc", 4) == created
    assert all_pages(database, "org-a", "desc", 4) == created[::-1]
    assert all_pages(database, "org-a", "desc", 11) == created[::-1]
    assert all_pages(database, "org-a", "asc", 100) == created


def test_filters_and_cursors_go_together(database: Database) -> None:
    tuning = add_files(database, "org-a", 3)
    add_files(database, "org-a", 2, purpose="batch")
    assert all_pages(database, "org-a", "asc", 2, purpose="fine-tune") == tuning
    with database.transaction() as connection:
        page, has_more = file_rows.list_files(
            connection, "org-a", purpose="fine-tune", after=tuning[0], limit=10, order="asc"
        )
    assert [record.id for record in page] == tuning[1:] and not has_more


def test_a_cursor_of_another_list_is_unknown(database: Database) -> None:
    theirs = add_files(database, "org-b", 1)[0]
    with database.transaction() as connection, pytest.raises(UnknownCursor):
        file_rows.list_files(connection, "org-a", purpose=None, after=theirs, limit=10, order="desc")
    with database.transaction() as connection, pytest.raises(UnknownCursor):
        file_rows.list_files(connection, "org-a", purpose=None, after="file-nonexistent", limit=10, order="desc")


def test_events_page_newest_first(database: Database) -> None:
    job_id = queue(database, "org-a")[0]
    created = []
    with database.transaction() as connection:
        for n in range(7):
            record = EventRecord(
                id=ids.new_id("ftevent-"), job_id=job_id, created_at=ids.now(), level="info", message=f"m{n}",
                type="message", data={"n": n},
            )  # fmt: skip
            event_rows.insert_event(connection, record)
            created.append(record.id)
    with database.transaction() as connection:
        first, more = event_rows.list_events(connection, job_id, after=None, limit=5)
        rest, more_after = event_rows.list_events(connection, job_id, after=first[-1].id, limit=5)
    assert [event.id for event in first + rest] == created[::-1]
    assert more and not more_after
    assert [event.data for event in rest] == [{"n": 1}, {"n": 0}]


def test_message_prefixes_match_case_and_all(database: Database) -> None:
    job_id = queue(database, "org-a")[0]
    messages = ["Checkpoint created at step 1", "checkpoint created at step 2", "Checkpoint_created 3", "100% done"]
    with database.transaction() as connection:
        for n, message in enumerate(messages):
            record = EventRecord(
                id=f"ftevent-{n}", job_id=job_id, created_at=1, level="info", message=message, type="message", data={}
            )
            event_rows.insert_event(connection, record)
    with database.transaction() as connection:
        found = [event.message for event in event_rows.message_events(connection, job_id, "Checkpoint created")]
        percent = [event.message for event in event_rows.message_events(connection, job_id, "100%")]
        underscore = [event.message for event in event_rows.message_events(connection, job_id, "Checkpoint_")]
    assert found == ["Checkpoint created at step 1"]  # not the lower-case one (SQLite's LIKE would match it)
    assert percent == ["100% done"] and underscore == ["Checkpoint_created 3"]
