"""Embedding stores: formats, memory mapping, resumable atomic writing and validation."""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import InputError
from audit.fileio import file_sha256
from audit.store import StoreWriter, open_store, read_labels_csv, write_store


def test_round_trip_with_shards_and_metadata(tmp_path, rng):
    x = rng.normal(size=(1000, 12)).astype(np.float32)
    meta = pd.DataFrame({"id": np.arange(1000), "label": rng.integers(0, 2, 1000)})
    store = write_store(
        tmp_path / "s",
        x,
        meta,
        model="ViT-B-32",
        pretrained="openai",
        modality="image",
        shard_rows=300,
    )
    assert store.count == 1000 and store.dim == 12 and len(store.shards) == 4
    assert isinstance(store.shards[0], np.memmap) or isinstance(store.shards[0].base, np.memmap)
    np.testing.assert_array_equal(store.read(), x)
    np.testing.assert_array_equal(store.read(250, 650), x[250:650])  # spans three shards
    rows = rng.integers(0, 1000, 50)
    np.testing.assert_array_equal(store.take(rows), x[rows])
    assert list(store.labels("label")) == list(meta["label"])
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    for key in (
        "format",
        "version",
        "model",
        "pretrained",
        "modality",
        "dim",
        "count",
        "normalized",
    ):
        assert key in manifest
    assert manifest["format"] == "msae-audit/embeddings" and manifest["count"] == 1000
    chunks = list(store.iter_chunks(333))
    assert [lo for lo, _ in chunks] == [0, 333, 666, 999]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), x)


def test_single_shard_is_named_embeddings_npy(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float16)
    write_store(tmp_path / "s", x, dtype="float16")
    assert (tmp_path / "s" / "embeddings.npy").exists()
    loaded = np.load(tmp_path / "s" / "embeddings.npy")
    assert loaded.dtype == np.float16 and loaded.shape == (10, 4)
    assert open_store(tmp_path / "s").read().dtype == np.float32


def test_plain_npy_with_labels(tmp_path, rng):
    x = rng.normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    pd.DataFrame({"y": range(20)}).to_csv(tmp_path / "y.csv", index=False)
    store = open_store(tmp_path / "x.npy", labels=tmp_path / "y.csv")
    assert store.count == 20 and list(store.labels("y")) == list(range(20))
    with pytest.raises(InputError, match="rows"):
        pd.DataFrame({"y": range(19)}).to_csv(tmp_path / "y2.csv", index=False)
        open_store(tmp_path / "x.npy", labels=tmp_path / "y2.csv")
    with pytest.raises(InputError, match="not found"):
        store.labels("nope")


def test_interrupted_writer_resumes_from_the_last_shard(tmp_path, rng):
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    meta = pd.DataFrame({"id": range(1000)})
    writer = StoreWriter(tmp_path / "s", 6, shard_rows=256, model="m")
    writer.append(x[:600], meta.iloc[:600])  # two full shards flushed, 88 rows buffered
    del writer  # "crash": buffered rows are lost, finished shards stay
    assert not (tmp_path / "s" / "manifest.json").exists()
    with pytest.raises(InputError, match="interrupted"):
        open_store(tmp_path / "s")
    resumed = StoreWriter(tmp_path / "s", 6, shard_rows=256, model="m")
    assert resumed.rows_done == 512
    resumed.append(x[512:], meta.iloc[512:])
    store = resumed.finalize()
    np.testing.assert_array_equal(store.read(), x)
    assert list(store.metadata["id"]) == list(range(1000))
    assert not (tmp_path / "s" / ".partial").exists()


class _Killed(BaseException):
    """Stands in for a kill: not an Exception, so no cleanup code catches it."""


def _finalize_killed_at_rename(writer: StoreWriter, n: int, monkeypatch) -> bool:
    """Run ``writer.finalize()`` with the ``n``-th ``os.replace`` call dying; whether it did."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            raise _Killed
        return real(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        try:
            writer.finalize()
        except _Killed:
            return True
    return False


@pytest.mark.parametrize(
    ("rows", "old_rows"), [(10, 0), (3, 0), (10, 7)], ids=["shards", "single", "overwrite"]
)
def test_a_finalize_killed_at_any_rename_leaves_a_resumable_store(
    tmp_path, rng, monkeypatch, rows, old_rows
):
    """Killed at any rename of finalize() (some shards published, some not), the folder
    holds the old store, the new one or an interrupted write (never a mix of rows), and
    rerunning resumes to the input."""
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    meta = pd.DataFrame({"id": range(rows)})
    for n in itertools.count(1):
        out = tmp_path / f"s{n}"
        old = rng.normal(size=(old_rows, 4)).astype(np.float32)
        if old_rows:
            write_store(out, old, shard_rows=3)
        writer = StoreWriter(out, 4, shard_rows=3, overwrite=bool(old_rows))
        writer.append(x, meta)
        if not _finalize_killed_at_rename(writer, n, monkeypatch):
            break  # n is past finalize's last rename: every kill point was tried
        try:
            seen = open_store(out).read()
        except InputError as exc:
            assert "interrupted" in str(exc)
        else:  # killed before the old store was unpublished, or after the new manifest
            assert np.array_equal(seen, old) or np.array_equal(seen, x)
        resumed = StoreWriter(out, 4, shard_rows=3, overwrite=bool(old_rows))
        resumed.append(x[resumed.rows_done :], meta.iloc[resumed.rows_done :])
        store = resumed.finalize()
        np.testing.assert_array_equal(store.read(), x)
        assert list(store.metadata["id"]) == list(range(rows))
    assert n > (rows + 2) // 3  # every shard's rename was a kill point


def test_writer_refuses_to_overwrite_and_mixed_settings(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x)
    with pytest.raises(InputError, match="already holds a store"):
        write_store(tmp_path / "s", x)
    write_store(tmp_path / "s", x * 2, overwrite=True)
    np.testing.assert_array_equal(open_store(tmp_path / "s").read(), x * 2)
    w = StoreWriter(tmp_path / "t", 4, shard_rows=4, model="a")
    w.append(x)
    with pytest.raises(InputError, match="different settings"):
        StoreWriter(tmp_path / "t", 4, shard_rows=4, model="b")
    with pytest.raises(InputError, match="NaN"):
        StoreWriter(tmp_path / "u", 4).append(np.full((2, 4), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="expected"):
        StoreWriter(tmp_path / "v", 4).append(np.zeros((2, 5), dtype=np.float32))
    big = np.full((2, 4), 7e4, dtype=np.float32)  # beyond float16's 65504: inf once cast
    with pytest.raises(InputError, match="do not fit float16"):
        StoreWriter(tmp_path / "w", 4, dtype="float16").append(big)


def test_a_store_never_replaces_files_it_did_not_write(tmp_path, rng):
    """A folder holding a plain embeddings.npy and its labels (a documented input) is not a
    store: writing one there is refused (publishing deleted them); --overwrite replaces only
    files of a store's names."""
    x = rng.normal(size=(4, 3)).astype(np.float32)
    folder = tmp_path / "work"
    folder.mkdir()
    np.save(folder / "embeddings.npy", x)
    pd.DataFrame({"y": range(4)}).to_csv(folder / "metadata.csv", index=False)
    np.save(folder / "embeddings-backup.npy", x)
    with pytest.raises(InputError, match=r"holds embeddings\.npy, which is not part of a store"):
        write_store(folder, x * 2, shard_rows=2)
    assert sorted(f.name for f in folder.iterdir()) == [
        "embeddings-backup.npy", "embeddings.npy", "metadata.csv"
    ]  # fmt: skip
    np.testing.assert_array_equal(np.load(folder / "embeddings.npy"), x)
    store = write_store(folder, x * 2, shard_rows=2, overwrite=True)
    np.testing.assert_array_equal(store.read(), x * 2)
    np.testing.assert_array_equal(np.load(folder / "embeddings-backup.npy"), x)


def test_an_overwrite_keeps_the_old_store_until_the_new_one_is_published(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, shard_rows=4)  # three shards
    writer = StoreWriter(tmp_path / "s", 4, overwrite=True)
    writer.append(x[:6] * 2)
    with pytest.raises(InputError, match="NaN"):  # the new input goes bad half-way
        writer.append(np.full((2, 4), np.nan, dtype=np.float32))
    np.testing.assert_array_equal(open_store(tmp_path / "s").read(), x)  # still the old store
    new = writer.finalize()
    np.testing.assert_array_equal(new.read(), x[:6] * 2)
    assert sorted(f.name for f in (tmp_path / "s").glob("embeddings*.npy")) == ["embeddings.npy"]


def test_a_shard_altered_after_writing_is_refused_when_first_read(tmp_path, rng):
    """Same row count, other bytes: the manifest's sha256 catches it on the shard's first
    read (read, take, iter_chunks); the other shards stay readable (each is checked alone)."""
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, shard_rows=4)  # shards of rows 0-3, 4-7, 8-9
    shard = np.load(tmp_path / "s" / "embeddings-00001.npy", mmap_mode="r+")
    shard[2, 3] = 7.0  # row 6
    shard.flush()
    del shard
    store = open_store(tmp_path / "s")  # opening stays cheap: nothing is hashed yet
    np.testing.assert_array_equal(store.read(0, 4), x[:4])
    np.testing.assert_array_equal(store.take([9, 1]), x[[9, 1]])
    for read in (lambda s: s.read(3, 5), lambda s: s.take([6]), lambda s: list(s.iter_chunks())):
        with pytest.raises(InputError, match=r"embeddings-00001\.npy: its bytes do not match"):
            read(open_store(tmp_path / "s"))
    unchanged = write_store(tmp_path / "t", x, shard_rows=4)
    np.testing.assert_array_equal(unchanged.read(), x)  # every shard checked, all pass
    assert unchanged.shard_sha256(2) == file_sha256(tmp_path / "t" / "embeddings-00002.npy")


def test_a_shard_holding_other_rows_than_its_manifest_entry_is_refused(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, shard_rows=4)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    manifest["shards"][0]["rows"], manifest["shards"][1]["rows"] = 3, 5  # the count still adds up
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="has 4 rows but the manifest says 3"):
        open_store(tmp_path / "s")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: np.save(p / "x.npy", np.zeros((3, 4, 5), dtype=np.float32)), "2-D"),
        (lambda p: np.save(p / "x.npy", np.zeros((3, 4), dtype=np.int64)), "dtype"),
        (
            lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
            "numeric",
        ),
        (lambda p: (p / "x.npy").write_bytes(b"\x93NUMPY garbage"), "npy"),
        (lambda p: (p / "x.npy").write_bytes(b""), "empty file"),
        (lambda p: (p / "x.npy").write_text("1,2,3\n"), "no NumPy header"),
        (
            lambda p: (np.save(p / "x.npy", np.ones((50, 8), np.float32)), _truncate(p / "x.npy")),
            "truncated .npy file",
        ),
        (lambda p: (p / "x.npy").mkdir(), "manifest.json is missing"),
    ],
)
def test_bad_npy_files(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(InputError, match=message):
        open_store(tmp_path / "x.npy")


def test_manifest_mismatches(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x)
    manifest_path = tmp_path / "s" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for change, message in [
        ({"dim": 5}, "columns"),
        ({"count": 11}, "count"),
        ({"format": "x"}, "format"),
        ({"version": 9}, "version"),
    ]:
        manifest_path.write_text(json.dumps({**manifest, **change}))
        with pytest.raises(InputError, match=message):
            open_store(tmp_path / "s")
    manifest_path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        open_store(tmp_path / "s")
    manifest_path.write_text(json.dumps({**manifest, "shards": [{"file": "../etc/passwd"}]}))
    with pytest.raises(InputError, match="invalid shard name"):
        open_store(tmp_path / "s")


def test_relative_image_paths_name_files_beside_the_store_from_any_folder(
    tmp_path, rng, monkeypatch
):
    """A hand-made or moved store may list its images relative to itself; the thumbnails and
    the image model must find them whatever folder the command runs in."""
    store_dir = tmp_path / "project" / "store"
    (store_dir / "images").mkdir(parents=True)
    (store_dir / "images" / "a.png").write_bytes(b"")
    absolute = str(tmp_path / "elsewhere.png")
    meta = pd.DataFrame({"id": [0, 1, 2], "path": ["images/a.png", absolute, None]})
    write_store(store_dir, rng.normal(size=(3, 4)).astype(np.float32), meta,
                model="m", pretrained="p", modality="image")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    paths = open_store(store_dir).metadata["path"].tolist()
    assert paths[0] == str((store_dir / "images" / "a.png").resolve())
    assert Path(paths[0]).is_file()
    assert paths[1] == absolute and pd.isna(paths[2])


def test_metadata_row_count_must_match(tmp_path, rng):
    x = rng.normal(size=(10, 4)).astype(np.float32)
    write_store(tmp_path / "s", x, pd.DataFrame({"a": range(10)}))
    pd.DataFrame({"a": range(9)}).to_csv(tmp_path / "s" / "metadata.csv", index=False)
    with pytest.raises(InputError, match="9 rows"):
        open_store(tmp_path / "s")


def test_non_finite_rows_are_named(tmp_path, rng):
    x = rng.normal(size=(100, 4)).astype(np.float32)
    x[57, 2] = np.inf
    np.save(tmp_path / "x.npy", x)
    store = open_store(tmp_path / "x.npy")
    with pytest.raises(InputError, match="row 57"):
        store.check_finite(chunk_rows=16)
    with pytest.raises(InputError, match="dimension 4"):
        open_store(tmp_path / "x.npy", expected_dim=8)


def test_labels_are_matched_to_the_store_by_id(tmp_path, rng):
    """Both sides have ids: a shuffled labels CSV is put in the store's order (by position it
    gave rows other images' labels); other ids are refused; a BOM is not part of a name."""
    x = rng.normal(size=(6, 3)).astype(np.float32)
    ids = [f"img{i}.png" for i in range(6)]
    write_store(tmp_path / "s", x, pd.DataFrame({"id": ids, "y": range(6)}))
    labels = pd.DataFrame({"id": ids, "target": [i * 10 for i in range(6)]})
    shuffled = labels.iloc[[4, 0, 5, 2, 1, 3]]
    with open(tmp_path / "l.csv", "w", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8"
        shuffled.to_csv(fh, index=False)
    store = open_store(tmp_path / "s", labels=tmp_path / "l.csv")
    assert store.metadata["id"].tolist() == ids
    assert store.metadata["target"].tolist() == [0, 10, 20, 30, 40, 50]
    labels.assign(id=[*ids[:5], "other.png"]).to_csv(tmp_path / "o.csv", index=False)
    with pytest.raises(InputError, match=r"row 7 has id 'other\.png' but the store's row 5"):
        open_store(tmp_path / "s", labels=tmp_path / "o.csv")
    repeated = tmp_path / "r"
    write_store(repeated, x, pd.DataFrame({"id": ["a", "a", "b", "c", "d", "e"]}))
    frame = pd.DataFrame({"id": ["a", "b", "a", "c", "d", "e"], "t": range(6)})
    frame.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(InputError, match="ids repeat, so rows cannot be matched"):
        open_store(repeated, labels=tmp_path / "r.csv")
    frame.iloc[[0, 2, 1, 3, 4, 5]].to_csv(tmp_path / "r2.csv", index=False)  # same order
    assert open_store(repeated, labels=tmp_path / "r2.csv").metadata["t"].tolist() == [
        0,
        2,
        1,
        3,
        4,
        5,
    ]
    # Integer ids match the same ids written as floats (what pandas writes for an id column
    # with one empty cell).
    write_store(tmp_path / "n", x, pd.DataFrame({"id": [3, 1, 2, 0, 5, 4]}))
    floats = pd.DataFrame({"id": np.arange(6, dtype=float), "t": range(6)})
    floats.to_csv(tmp_path / "n.csv", index=False)
    matched = open_store(tmp_path / "n", labels=tmp_path / "n.csv").metadata
    assert matched["t"].tolist() == [3, 1, 2, 0, 5, 4]
    # No id on one side: rows are matched by position, as documented.
    pd.DataFrame({"target": range(6)}).to_csv(tmp_path / "p.csv", index=False)
    assert open_store(tmp_path / "s", labels=tmp_path / "p.csv").metadata["target"].tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]


def test_labels_keep_each_rows_id_and_image_from_the_store(tmp_path, rng):
    """A labels table brings label columns; a row's id and image path stay the store's: added
    when the labels lack them, refused (one line) when the labels name other images."""
    x = rng.normal(size=(3, 2)).astype(np.float32)
    meta = pd.DataFrame({"id": ["a", "b", "c"], "path": ["img/a.png", "img/b.png", "img/c.png"]})
    write_store(tmp_path / "s", x, meta.assign(colour=["red", "red", "blue"]))
    images = [str((tmp_path / "s" / "img" / n).resolve()) for n in ("a.png", "b.png", "c.png")]
    pd.DataFrame({"target": [1, 0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    merged = open_store(tmp_path / "s", labels=tmp_path / "t.csv").metadata
    assert merged.columns.tolist() == ["id", "path", "target"]  # not the store's other labels
    assert merged["id"].tolist() == ["a", "b", "c"] and merged["path"].tolist() == images
    # The same images, written as the store's metadata.csv writes them: accepted.
    meta.iloc[[2, 0, 1]].assign(target=[1, 1, 0]).to_csv(tmp_path / "same.csv", index=False)
    same = open_store(tmp_path / "s", labels=tmp_path / "same.csv").metadata
    assert same["path"].tolist() == images and same["target"].tolist() == [1, 0, 1]
    # The same files written from another folder: the store's paths stand.
    meta.assign(path=["/elsewhere/a.png", "b.png", "x/c.png"]).to_csv(
        tmp_path / "moved.csv", index=False
    )
    moved = open_store(tmp_path / "s", labels=tmp_path / "moved.csv").metadata
    assert moved["path"].tolist() == images
    # Other images under the same ids: the thumbnails and an image model would use them.
    meta.assign(path=["img/a.png", "img/c.png", "img/b.png"]).to_csv(
        tmp_path / "o.csv", index=False
    )
    with pytest.raises(InputError) as exc:
        open_store(tmp_path / "s", labels=tmp_path / "o.csv")
    message = str(exc.value)
    assert "column 'path' names other images than the store's metadata.csv on 2 rows" in message
    assert "store row 1: img/c.png is not" in message and "\n" not in message


def test_labels_may_be_parquet(tmp_path, rng):
    """A Parquet table (recognised by its bytes) reads like the CSV: a named index comes back
    as a column, so ids saved as the index still match the store's."""
    x = rng.normal(size=(5, 3)).astype(np.float32)
    ids = [f"img{i}.png" for i in range(5)]
    write_store(tmp_path / "s", x, pd.DataFrame({"id": ids}))
    table = pd.DataFrame({"id": ids, "target": [0, 1, 0, 1, 1]}).iloc[[3, 1, 4, 0, 2]]
    table.set_index("id").to_parquet(tmp_path / "labels.data")
    store = open_store(tmp_path / "s", labels=tmp_path / "labels.data")
    assert store.metadata["id"].tolist() == ids
    assert store.metadata["target"].tolist() == [0, 1, 0, 1, 1]
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "labels.data").read_bytes()[:40])
    with pytest.raises(InputError, match="malformed Parquet file"):
        read_labels_csv(tmp_path / "cut.parquet")


def test_labels_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(InputError):
        read_labels_csv(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_labels_csv(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="not found"):
        read_labels_csv(tmp_path / "missing.csv")


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(0, 50), dim=st.integers(1, 6), shard=st.integers(1, 17))
def test_property_store_round_trip_keeps_row_order(tmp_path_factory, rows, dim, shard):
    x = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim)
    out = tmp_path_factory.mktemp("p") / "s"
    store = write_store(out, x, shard_rows=shard)
    np.testing.assert_array_equal(store.read(), x)
    assert store.count == rows
    assert all(
        Path(store.path, s["file"]).exists()
        for s in json.loads((out / "manifest.json").read_text())["shards"]
    )


@pytest.mark.parametrize("cut", [45, 59, 80])
def test_damaged_npy_headers_are_input_errors(tmp_path, cut):
    """Found by tests/test_fuzz_parsers.py: a header cut short and followed by a second copy of
    the file made numpy's header parser raise tokenize.TokenError (an internal error, exit 4)."""
    buffer = io.BytesIO()
    np.save(buffer, np.arange(40, dtype=np.float32).reshape(10, 4))
    data = buffer.getvalue()
    (tmp_path / "x.npy").write_bytes(data[:cut] + data)
    with pytest.raises(InputError, match=r"x\.npy: damaged \.npy header"):
        open_store(tmp_path / "x.npy")
