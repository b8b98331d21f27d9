"""What every blob store does, on the local directory and on S3 (SeaweedFS): the services rely
on exactly this, whichever store a deployment uses."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from openft.blobs import BlobStore
from tests.blobs.conftest import PART_BYTES

MIB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from part to part, so a misplaced part shows."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def test_put_read_and_stream(store: BlobStore) -> None:
    store.put("files/a", b"hello")
    assert (store.read("files/a"), store.size("files/a"), store.exists("files/a")) == (b"hello", 5, True)
    assert b"".join(store.read_chunks("files/a")) == b"hello"
    assert not store.exists("files/missing")
    with pytest.raises(FileNotFoundError):
        store.read_chunks("files/missing")  # at once, before any byte is streamed


def test_a_streamed_write_larger_than_a_part_arrives_whole(store: BlobStore) -> None:
    data = pattern(2 * PART_BYTES + 3)
    with store.writer("files/big") as writer:
        for start in range(0, len(data), MIB):
            writer.write(data[start : start + MIB])
            assert not store.exists("files/big")  # nothing visible before the commit
    assert writer.size == len(data)
    assert b"".join(store.read_chunks("files/big")) == data and store.size("files/big") == len(data)


def test_a_discarded_or_failed_write_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    writer = store.writer("files/dropped")
    writer.write(pattern(PART_BYTES + 1))  # past one part: on S3 a multipart upload has begun
    writer.discard()
    with pytest.raises(RuntimeError), store.writer("files/failed") as failing:
        failing.write(pattern(PART_BYTES + 1, seed=1))
        raise RuntimeError("the client went away")
    assert not store.exists("files/dropped") and not store.exists("files/failed")
    assert store.children("files") == [] and store.remove_stale_temporaries(time.time() + 60) == (0, 0)


def test_concatenation_of_parts_large_and_small(store: BlobStore) -> None:
    sizes = [PART_BYTES + 10, 100, PART_BYTES, 7]  # copied whole on S3 where a part can be, else streamed
    for index, size in enumerate(sizes):
        store.put(f"uploads/u/{index}", pattern(size, seed=index))
    total = store.put_concatenation("files/joined", [f"uploads/u/{i}" for i in (0, 1, 2, 3)])
    expected = b"".join(pattern(size, seed=index) for index, size in enumerate(sizes))
    assert total == len(expected) and store.read("files/joined") == expected
    assert store.put_concatenation("files/small-first", ["uploads/u/1", "uploads/u/0"]) == 100 + PART_BYTES + 10
    assert store.read("files/small-first") == pattern(100, seed=1) + pattern(PART_BYTES + 10)


def test_trees_children_sizes_and_deletion(store: BlobStore) -> None:
    before = time.time() - 5
    store.put("uploads/u1/p1", b"12345")
    store.put("uploads/u1/p2", b"678")
    store.put("uploads/u2/p1", b"9")
    store.put("uploads-other/x", b"not under uploads/")
    children = dict(store.children("uploads"))
    assert sorted(children) == ["uploads/u1", "uploads/u2"] and all(t > before for t in children.values())
    assert (store.tree_size("uploads/u1"), store.tree_size("uploads/u1/p1"), store.tree_size("uploads/none")) == (
        8,
        5,
        0,
    )
    store.delete_tree("uploads/u1")
    store.delete("uploads/u2/p1")
    store.delete("uploads/u2/p1")  # deleting what is gone is no error
    assert "uploads/u1" not in dict(store.children("uploads")) and not store.exists("uploads/u2/p1")
    assert store.read("uploads-other/x") == b"not under uploads/"


def test_a_tree_is_published_from_a_work_dir_and_read_as_a_local_directory(store: BlobStore) -> None:
    work = store.work_dir("jobs/j1")
    checkpoint = work / "checkpoints" / "step-2"
    (checkpoint / "nested").mkdir(parents=True)
    (checkpoint / "adapter.bin").write_bytes(pattern(PART_BYTES + 5))
    (checkpoint / "nested" / "config.json").write_bytes(b"{}")
    store.upload_tree("jobs/j1/checkpoints/step-2-a", checkpoint)
    assert not checkpoint.exists()  # the store's now
    assert store.tree_size("jobs/j1/checkpoints/step-2-a") == PART_BYTES + 5 + 2

    local = store.local_tree("jobs/j1/checkpoints/step-2-a")
    assert (local / "adapter.bin").read_bytes() == pattern(PART_BYTES + 5)
    assert (local / "nested" / "config.json").read_bytes() == b"{}"
    assert store.local_tree("jobs/j1/checkpoints/step-2-a") == local
    with pytest.raises(FileNotFoundError):
        store.local_tree("jobs/j1/checkpoints/none")
    store.delete_tree("jobs/j1/checkpoints/step-2-a")
    assert not local.exists() and store.tree_size("jobs/j1/checkpoints/step-2-a") == 0


def test_a_replaced_file_is_fetched_as_it_is_now(store: BlobStore, tmp_path: Path) -> None:
    for version in (b"state one", b"state two"):
        state = store.work_dir("jobs/j2") / "resume.pt"
        state.write_bytes(version)
        store.upload_file("jobs/j2/resume.pt", state)
        assert store.fetch_file("jobs/j2/resume.pt", tmp_path / "fetched" / "resume.pt").read_bytes() == version
    store.put("files/f", b"immutable")
    assert store.local_file("files/f").read_bytes() == b"immutable"


def test_stale_temporaries_are_removed_and_fresh_ones_kept(store: BlobStore) -> None:
    crashed = store.writer("files/crashed")
    crashed.write(pattern(PART_BYTES + 1))  # and never committed nor discarded: a kill
    assert store.remove_stale_temporaries(time.time() - 3600) == (0, 0)  # begun after: kept
    count, freed = store.remove_stale_temporaries(time.time() + 60)
    assert count == 1 and freed >= PART_BYTES
    assert store.remove_stale_temporaries(time.time() + 60) == (0, 0) and not store.exists("files/crashed")


def test_keys_cannot_escape_the_store(store: BlobStore) -> None:
    for key in ("../outside", "files/../../outside", os.path.abspath("/etc/passwd")):
        with pytest.raises(ValueError):
            store.put(key, b"x")
