"""Merging per-rank stores (distributed embedding) back into the original row order."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import audit.store_merge as store_merge
from audit.errors import InputError
from audit.store import StoreWriter, open_store, write_store
from audit.store_merge import merge_rank_stores, rank_part_path, rank_part_paths, rank_row_blocks


def _embed_like_ranks(out, x, world, block_rows, shard_rows, metadata=None, **writer_kw):
    """What each rank of a distributed ``embed`` does: its blocks, in order, into its part."""
    for rank in range(world):
        writer = StoreWriter(
            rank_part_path(out, rank), x.shape[1], shard_rows=shard_rows, **writer_kw
        )
        for start, stop in rank_row_blocks(len(x), rank, world, block_rows):
            writer.append(x[start:stop], None if metadata is None else metadata.iloc[start:stop])
        writer.finalize()
    return rank_part_paths(out, world)


def _shard_inodes(directory) -> set[int]:
    return {f.stat().st_ino for f in directory.rglob("embeddings*.npy")}


@pytest.mark.parametrize("count,world,block", [(10, 3, None), (10, 3, 2), (7, 4, 3), (2, 3, None)])
def test_rank_row_blocks_partition_the_input(count, world, block):
    blocks = [rank_row_blocks(count, r, world, block) for r in range(world)]
    covered = sorted(row for rank in blocks for a, b in rank for row in range(a, b))
    assert covered == list(range(count))
    if block is None:
        sizes = [sum(b - a for a, b in rank) for rank in blocks]
        assert max(sizes) - min(sizes) <= 1 and all(len(rank) <= 1 for rank in blocks)
    else:
        assert all(a % block == 0 for rank in blocks for a, _ in rank)
    with pytest.raises(InputError):
        rank_row_blocks(count, world, world)


@pytest.mark.parametrize("block_rows", [100, None])
def test_aligned_blocks_are_merged_by_renaming_shards(tmp_path, rng, block_rows):
    x = rng.normal(size=(1030, 6)).astype(np.float32)
    meta = pd.DataFrame({"id": np.arange(1030), "path": [f"img{i}.jpg" for i in range(1030)]})
    out = tmp_path / "store"
    parts = _embed_like_ranks(out, x, 3, block_rows, 50, meta, model="ViT-B-32", modality="image")
    before = set().union(*(_shard_inodes(p) for p in parts))
    merged = merge_rank_stores(parts, out, block_rows=block_rows, shard_rows=50)
    np.testing.assert_array_equal(merged.read(), x)
    assert list(merged.metadata["id"]) == list(range(1030))
    assert merged.model == "ViT-B-32" and merged.modality == "image" and merged.count == 1030
    # No row was copied: the merged shards are the ranks' files, renamed.
    assert _shard_inodes(out) == before
    assert not (out / ".ranks").exists() and not (out / ".partial").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert all("sha256" in s for s in manifest["shards"])
    assert manifest["merged_from"] == {"parts": 3, "block_rows": block_rows}


@pytest.mark.parametrize("block_rows,move", [(30, True), (1, True), (100, False)])
def test_unaligned_or_copied_merges_keep_the_order(tmp_path, rng, block_rows, move):
    x = rng.normal(size=(457, 5)).astype(np.float16)
    meta = pd.DataFrame({"id": np.arange(457)})
    out = tmp_path / "store"
    parts = _embed_like_ranks(out, x, 3, block_rows, 50, meta, dtype="float16")
    merged = merge_rank_stores(parts, out, block_rows=block_rows, move_shards=move, shard_rows=64)
    assert merged.dtype == np.float16
    np.testing.assert_array_equal(merged.read(), x.astype(np.float32))
    assert list(merged.metadata["id"]) == list(range(457))
    assert all(len(s) <= 64 or block_rows == 100 for s in merged.shards)
    if not move:  # copying leaves the parts intact and usable
        assert sum(open_store(p).count for p in parts) == 457


def test_an_interrupted_merge_resumes(tmp_path, rng, monkeypatch):
    x = rng.normal(size=(600, 4)).astype(np.float32)
    out = tmp_path / "store"
    # Blocks of 75 rows over shards of 50: whole shards are moved, straddling rows copied.
    parts = _embed_like_ranks(out, x, 2, 75, 50)
    real = store_merge._build_shard
    calls = {"n": 0}

    def crash_after_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store_merge, "_build_shard", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        merge_rank_stores(parts, out, block_rows=75, shard_rows=40)
    assert not (out / "manifest.json").exists()
    plan = json.loads((out / ".partial" / "merge.json").read_text())
    assert {"move", "copy"} <= {key for spec in plan["shards"] for key in spec}
    monkeypatch.setattr(store_merge, "_build_shard", real)
    merged = merge_rank_stores(parts, out, block_rows=75, shard_rows=40)
    np.testing.assert_array_equal(merged.read(), x)
    with pytest.raises(InputError, match="already holds a store"):
        merge_rank_stores(parts, out, block_rows=75)


@pytest.mark.parametrize("move", [True, False], ids=["moved", "copied"])
def test_a_part_shard_altered_after_writing_never_passes_the_merge(tmp_path, rng, move):
    """A copied shard is checked before its rows get a new sha256 (which would launder the
    damage); a moved one keeps its recorded sha256, so reading the merged store refuses it."""
    x = rng.normal(size=(40, 4)).astype(np.float32)
    out = tmp_path / "store"
    parts = _embed_like_ranks(out, x, 2, None, 10)
    shard = np.load(parts[1] / "embeddings-00000.npy", mmap_mode="r+")
    shard[3, 0] += 1.0
    shard.flush()
    del shard
    with pytest.raises(InputError, match="do not match the sha256"):
        merge_rank_stores(parts, out, move_shards=move, shard_rows=7).read()


def test_merge_refuses_inconsistent_parts(tmp_path, rng):
    x = rng.normal(size=(100, 4)).astype(np.float32)
    a = write_store(tmp_path / "a", x[:50], model="m1").path
    b = write_store(tmp_path / "b", x[50:], model="m2").path
    with pytest.raises(InputError, match="model"):
        merge_rank_stores([a, b], tmp_path / "out")
    c = write_store(tmp_path / "c", x[50:], model="m1").path
    # With blocks of 10 and 80 rows in all, two ranks hold 40 + 40 rows, never 50 + 30.
    d = write_store(tmp_path / "d", x[50:80], model="m1").path
    with pytest.raises(InputError, match="part 0 holds 50 rows"):
        merge_rank_stores([a, d], tmp_path / "out", block_rows=10)
    with_meta = write_store(tmp_path / "e", x[50:], pd.DataFrame({"id": range(50)}), model="m1")
    with pytest.raises(InputError, match=r"metadata\.csv"):
        merge_rank_stores([a, with_meta.path], tmp_path / "out")
    with pytest.raises(InputError, match="no stores"):
        merge_rank_stores([], tmp_path / "out")
    merged = merge_rank_stores([a, c], tmp_path / "out", block_rows=10, move_shards=False)
    expected = np.concatenate(
        [np.concatenate([x[i : i + 10], x[50 + i : 60 + i]]) for i in range(0, 50, 10)]
    )
    np.testing.assert_array_equal(merged.read(), expected)  # interleaved as the layout says
    assert os.path.exists(a / "embeddings.npy")  # copies leave parts alone


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(0, 120),
    world=st.integers(1, 4),
    block=st.one_of(st.none(), st.integers(1, 40)),
    shard=st.integers(1, 30),
    out_shard=st.integers(1, 50),
)
def test_property_merge_restores_the_input_order(
    tmp_path_factory, count, world, block, shard, out_shard
):
    x = np.arange(count * 3, dtype=np.float32).reshape(count, 3)
    out = tmp_path_factory.mktemp("m") / "store"
    parts = _embed_like_ranks(out, x, world, block, shard)
    merged = merge_rank_stores(parts, out, block_rows=block, shard_rows=out_shard)
    assert merged.count == count
    np.testing.assert_array_equal(merged.read(), x)
