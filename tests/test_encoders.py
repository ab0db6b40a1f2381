"""open_clip loading and batched embedding: equality with open_clip itself, errors, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from audit.encoders import (
    embed_images,
    embed_texts,
    finish_store,
    list_images,
    load_clip,
    rank_slice,
    scan_images,
)
from audit.errors import InputError
from audit.store import StoreWriter, open_store
from tests.world_helpers import TINY_CONFIG, make_random_clip


@pytest.fixture(scope="module")
def random_clip_files(tmp_path_factory):
    return make_random_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def clip(random_clip_files):
    config, weights, _ = random_clip_files
    return load_clip(str(config), str(weights), device="cpu")


def _write_images(folder: Path, n: int, size: int = 40, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, size=(size, size + 5 * (i % 3), 3), dtype=np.uint8)
        path = folder / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _reference_open_clip(config: Path, weights: Path):
    """open_clip used directly, the way its README shows (independent of audit.encoders)."""
    import open_clip

    open_clip.add_model_config(config)
    model, _, preprocess = open_clip.create_model_and_transforms(
        config.stem, pretrained=str(weights)
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(config.stem)


def test_embeddings_equal_open_clip_encode_image_and_text(tmp_path, random_clip_files, clip):
    config, weights, _ = random_clip_files
    paths = _write_images(tmp_path / "imgs", 7)
    writer = StoreWriter(tmp_path / "store", clip.embed_dim, model=clip.model_id, modality="image")
    store = finish_store(writer, embed_images([str(p) for p in paths], clip, writer, batch_size=3))

    model, preprocess, tokenizer = _reference_open_clip(config, weights)
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(p)) for p in paths])
        expected = model.encode_image(images).numpy()
        texts = ["a red circle", "a photo of a dog", "striped"]
        expected_text = model.encode_text(tokenizer(texts)).numpy()
    np.testing.assert_allclose(store.read(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clip.encode_texts(texts), expected_text, rtol=1e-5, atol=1e-5)
    # Raw outputs are stored, and the manifest says so honestly.
    assert store.manifest["normalized"] is False
    assert not np.allclose(np.linalg.norm(store.read(), axis=1), 1.0)


def test_normalize_option_and_torch_checkpoint(tmp_path, random_clip_files, clip):
    config, _, torch_ckpt = random_clip_files
    from_pt = load_clip(str(config), str(torch_ckpt), device="cpu")
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 3)]
    writer = StoreWriter(tmp_path / "s", clip.embed_dim, normalized=True)
    store = finish_store(writer, embed_images(paths, from_pt, writer, normalize=True))
    assert store.normalized is True
    np.testing.assert_allclose(np.linalg.norm(store.read(), axis=1), 1.0, atol=1e-5)
    # Same weights from the .pt as from the .safetensors.
    raw = from_pt.encode_texts(["a star"])
    np.testing.assert_allclose(raw, clip.encode_texts(["a star"]), atol=1e-6)
    # The writer's normalized flag must match what is written.
    with pytest.raises(InputError, match="normalized"):
        embed_images(paths, clip, StoreWriter(tmp_path / "t", clip.embed_dim), normalize=True)


def test_open_clip_config_wrapper_and_recorded_ids(tmp_path, random_clip_files):
    _, weights, _ = random_clip_files
    wrapped = tmp_path / "open_clip_config.json"
    wrapped.write_text(
        json.dumps(
            {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
        )
    )
    encoder = load_clip(str(wrapped), str(weights), device="cpu")
    assert encoder.model_id == str(wrapped.resolve())
    assert encoder.pretrained == str(weights.resolve())
    assert encoder.embed_dim == 32 and encoder.context_length == 16
    normalize = encoder.preprocess.transforms[-1]
    assert list(normalize.mean) == [0.5] * 3


@pytest.mark.parametrize(
    "model,pretrained,message",
    [
        ("ViT-Nope-99", "openai", "unknown open_clip model"),
        ("ViT-B-32-quickgelu", "openai", "downloads are disabled"),
        ("ViT-B-32", "no/such/file.pt", "checkpoint not found"),
        ("ViT-B-32", "not-a-tag", "neither a checkpoint file nor a known tag"),
        ("missing-config.json", "x.pt", "model config not found"),
        ("hf-hub:org/repo", None, "downloads are disabled"),
    ],
)
def test_loading_errors_name_the_problem(monkeypatch, model, pretrained, message):
    monkeypatch.setenv("MSAE_AUDIT_NO_DOWNLOAD", "1")
    with pytest.raises(InputError, match=message):
        load_clip(model, pretrained, device="cpu")


@pytest.mark.parametrize(
    "model,pretrained,fix",
    [
        ("ViT-L-14", "openai", "use --model ViT-L-14-quickgelu"),
        ("RN50", "OpenAI", "use --model RN50-quickgelu"),
    ],
)
def test_weights_trained_with_another_activation_are_refused(monkeypatch, model, pretrained, fix):
    """open_clip builds these configs and loads the weights with only a warning; the
    embeddings would differ from the CLIP the weights come from. Refused before any download."""
    monkeypatch.setenv("MSAE_AUDIT_NO_DOWNLOAD", "1")
    with pytest.raises(InputError, match="trained with") as caught:
        load_clip(model, pretrained, device="cpu")
    assert str(caught.value).endswith(fix)


def test_mismatched_or_damaged_checkpoint(tmp_path, random_clip_files):
    config, weights, _ = random_clip_files
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_CONFIG, "embed_dim": 16}))
    with pytest.raises(InputError, match="does not match"):
        load_clip(str(other), str(weights), device="cpu")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match=r"broken\.pt"):
        load_clip(str(config), str(broken), device="cpu")
    not_config = tmp_path / "notcfg.json"
    not_config.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not an open_clip model config"):
        load_clip(str(not_config), str(weights), device="cpu")


def test_unreadable_image_is_named_or_skipped(tmp_path, clip):
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 5)]
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"\x89PNG this is not really a png")
    paths.insert(2, str(bad))
    with pytest.raises(InputError, match=r"broken\.png"):
        embed_images(paths, clip, StoreWriter(tmp_path / "a", clip.embed_dim))

    meta = pd.DataFrame({"id": [Path(p).name for p in paths], "label": range(len(paths))})
    writer = StoreWriter(tmp_path / "b", clip.embed_dim)
    result = embed_images(paths, clip, writer, metadata=meta, skip_bad_images=True, num_workers=2)
    store = finish_store(writer, result)
    assert store.count == 5 and store.manifest["skipped"] == 1
    skipped = pd.read_csv(tmp_path / "b" / "skipped.csv")
    assert skipped["path"].tolist() == [str(bad)] and skipped["row"].tolist() == [2]
    assert store.metadata["label"].tolist() == [0, 1, 3, 4, 5]  # rows stay aligned


class _Interrupt(Exception):
    pass


def test_interrupted_embedding_resumes_to_the_same_store(tmp_path, clip):
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 23)]
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"garbage")
    paths.insert(4, str(tmp_path / "imgs" / "bad.jpg"))
    meta = pd.DataFrame({"id": range(len(paths)), "path": paths})

    def run(out: Path, stop_after: int | None = None):
        writer = StoreWriter(out, clip.embed_dim, shard_rows=5, model="m")
        calls = {"n": 0}

        def progress(done: int, total: int) -> None:
            calls["n"] += 1
            if stop_after is not None and calls["n"] > stop_after:
                raise _Interrupt

        result = embed_images(
            paths,
            clip,
            writer,
            metadata=meta,
            batch_size=3,
            skip_bad_images=True,
            progress=progress,
        )
        return finish_store(writer, result)

    reference = run(tmp_path / "ref")
    with pytest.raises(_Interrupt):
        run(tmp_path / "resumed", stop_after=5)  # after the skipped image, mid-shard
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    assert len(list((tmp_path / "resumed" / ".partial").glob("embeddings-*.npy"))) >= 2
    resumed = run(tmp_path / "resumed")
    # Bit-identical: the resumed run re-reads the batch the interruption fell in, so every
    # batch holds the same images as the uninterrupted run's (kernels depend on the batch).
    np.testing.assert_array_equal(resumed.read(), reference.read())
    pd.testing.assert_frame_equal(resumed.metadata, reference.metadata)
    assert resumed.manifest["skipped"] == reference.manifest["skipped"] == 1
    assert resumed.count == len(paths) - 1


def test_resume_with_another_input_list_is_refused(tmp_path, clip):
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 12)]
    writer = StoreWriter(tmp_path / "s", clip.embed_dim, shard_rows=4)

    def stop(done: int, total: int) -> None:
        if done >= 8:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        embed_images(paths, clip, writer, batch_size=4, progress=stop)
    with pytest.raises(InputError, match="different input list"):
        embed_images(paths[::-1], clip, StoreWriter(tmp_path / "s", clip.embed_dim, shard_rows=4))


def test_overwrite_starts_over_when_the_interrupted_run_read_other_inputs(tmp_path, clip):
    """--overwrite replaces what is in --out, an interrupted run included: another input list
    starts from row 0 instead of being refused, and the complete store that was there stays
    readable until the new one is published."""
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 12)]
    out = tmp_path / "s"

    def embed(inputs: list[str], progress=None, overwrite: bool = True):
        writer = StoreWriter(out, clip.embed_dim, shard_rows=4, overwrite=overwrite)
        return finish_store(
            writer, embed_images(inputs, clip, writer, batch_size=4, progress=progress)
        )

    def stop(done: int, total: int) -> None:
        if done >= 8:
            raise _Interrupt

    embed(paths[:5], overwrite=False)  # the store already in --out
    with pytest.raises(_Interrupt):
        embed(paths, progress=stop)
    assert open_store(out).count == 5  # still the old store, whole
    store = embed(paths[::-1])
    fresh = StoreWriter(tmp_path / "ref", clip.embed_dim, shard_rows=4)
    reference = finish_store(fresh, embed_images(paths[::-1], clip, fresh, batch_size=4))
    assert store.count == 12 and not (out / ".partial").exists()
    np.testing.assert_array_equal(open_store(out).read(), reference.read())


def test_text_store_resumes_and_counts_full_contexts(tmp_path, clip):
    texts = [f"word {i}" for i in range(10)] + ["a very long caption " * 10]
    writer = StoreWriter(tmp_path / "t", clip.embed_dim, shard_rows=4)
    result = embed_texts(texts, clip, writer, batch_size=4)
    store = finish_store(writer, result)
    assert result.truncated_texts == 1 and store.manifest["texts_filling_context"] == 1
    np.testing.assert_allclose(store.read(), clip.encode_texts(texts), atol=1e-6)


def test_interrupted_text_store_resumes_bit_identical(tmp_path, clip):
    texts = [f"a photo of thing number {i}" for i in range(23)]
    reference = finish_store(
        w := StoreWriter(tmp_path / "ref", clip.embed_dim, shard_rows=5),
        embed_texts(texts, clip, w, batch_size=4),
    ).read()

    def stop(done: int, total: int) -> None:
        if done >= 12:
            raise _Interrupt

    writer = StoreWriter(tmp_path / "t", clip.embed_dim, shard_rows=5)
    with pytest.raises(_Interrupt):
        embed_texts(texts, clip, writer, batch_size=4, progress=stop)
    resumed = StoreWriter(tmp_path / "t", clip.embed_dim, shard_rows=5)
    assert resumed.rows_done == 10  # mid-batch: rows 8-11 were one batch
    store = finish_store(resumed, embed_texts(texts, clip, resumed, batch_size=4))
    np.testing.assert_array_equal(store.read(), reference)


def test_list_images_folder_and_manifest(tmp_path):
    _write_images(tmp_path / "d" / "sub", 2)
    _write_images(tmp_path / "d", 2, seed=1)
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    table = list_images(tmp_path / "d")
    assert table["id"].tolist() == ["img000.jpg", "img001.png", "sub/img000.jpg", "sub/img001.png"]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["d/img001.png", "d/sub/img000.jpg"], "y": [1, 0]}).to_csv(
        manifest, index=False
    )
    table = list_images(manifest)
    assert table.columns[:2].tolist() == ["id", "path"]
    assert Path(table["path"][0]) == tmp_path / "d" / "img001.png" and table["y"].tolist() == [1, 0]
    with pytest.raises(InputError, match="'path' column"):
        pd.DataFrame({"file": ["x.png"]}).to_csv(tmp_path / "bad.csv")
        list_images(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="no images"):
        (tmp_path / "empty").mkdir()
        list_images(tmp_path / "empty")


def test_files_left_out_of_a_folder_are_counted_by_reason(tmp_path):
    _write_images(tmp_path / "d" / "sub", 2)
    (tmp_path / "d" / "link.png").symlink_to(tmp_path / "d" / "sub" / "img001.png")  # an image
    for name in ("gone.jpg", "sub/gone2.png"):
        (tmp_path / "d" / name).symlink_to(tmp_path / "nowhere.png")
    for name in ("a.heic", "b.heic", "notes.txt", "z.avif"):
        (tmp_path / "d" / name).write_bytes(b"x")
    table, left_out = scan_images(tmp_path / "d")
    assert table["id"].tolist() == ["link.png", "sub/img000.jpg", "sub/img001.png"]
    assert left_out.dangling == ("gone.jpg", "sub/gone2.png")
    assert left_out.unsupported == ("a.heic", "b.heic", "notes.txt", "z.avif")
    line = left_out.describe("d")
    assert line.startswith("left out 6 file(s) under d: 2 dangling symlink (gone.jpg, ")
    assert "4 not an image type that is read (a.heic, b.heic, notes.txt, …)" in line
    assert "z.avif" not in line and "\n" not in line  # a few examples, one line
    _write_images(tmp_path / "clean", 1)
    assert len(scan_images(tmp_path / "clean")[1]) == 0
    # Nothing readable at all: the error says what was there.
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.heic").write_bytes(b"x")
    with pytest.raises(InputError, match=r"no images .* \(left out 1 file\(s\) .*x\.heic"):
        scan_images(tmp_path / "e")


def test_rank_slices_cover_the_input_in_order():
    for n, world in [(10, 3), (2, 4), (0, 2), (17, 1)]:
        parts = [list(rank_slice(n, r, world)) for r in range(world)]
        assert [i for part in parts for i in part] == list(range(n))
    with pytest.raises(InputError):
        rank_slice(5, 3, 3)


def test_store_opens_with_metadata(tmp_path, clip):
    paths = [str(p) for p in _write_images(tmp_path / "imgs", 3)]
    meta = pd.DataFrame({"id": ["a", "b", "c"], "path": paths, "y": [0, 1, 0]})
    writer = StoreWriter(tmp_path / "s", clip.embed_dim, model=clip.model_id)
    finish_store(writer, embed_images(paths, clip, writer, metadata=meta))
    store = open_store(tmp_path / "s")
    assert store.labels("y").tolist() == [0, 1, 0]
    assert store.manifest["model"] == clip.model_id


@pytest.mark.parametrize("force_unsafe_retry", [False, True])
def test_pickled_pretrained_checkpoints_are_refused_and_never_run(
    tmp_path, monkeypatch, random_clip_files, force_unsafe_retry
):
    from tests.hostile_files import torch_pickle, typeerror_then_code_pickle

    if force_unsafe_retry:
        # What torch < 2.6 does by default: open_clip's TypeError retry would unpickle code.
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    config = random_clip_files[0]
    marker = tmp_path / "ran"
    for evil in (
        torch_pickle(tmp_path / "evil.pt", marker, key="state_dict"),
        typeerror_then_code_pickle(tmp_path / "evil.bin", marker),
    ):
        with pytest.raises(InputError, match="refused to load"):
            load_clip(str(config), str(evil), device="cpu")
        assert not marker.exists(), evil.name


def _local_dir(root: Path, config: Path) -> Path:
    """An open_clip ``local-dir:`` folder: open_clip_config.json (weights are added by the test)."""
    root.mkdir()
    model_cfg = json.loads(config.read_text(encoding="utf-8"))
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    return root


@pytest.mark.parametrize("force_unsafe_retry", [False, True])
def test_pickled_weights_in_a_local_dir_are_refused_and_never_run(
    tmp_path, monkeypatch, random_clip_files, force_unsafe_retry
):
    # open_clip finds a local-dir's weights itself, past the --pretrained check; its TypeError
    # retry used to unpickle this file's payload under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
    from tests.hostile_files import typeerror_then_code_pickle

    if force_unsafe_retry:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = _local_dir(tmp_path / "clip", random_clip_files[0])
    marker = tmp_path / "ran"
    typeerror_then_code_pickle(folder / "open_clip_pytorch_model.bin", marker)
    with pytest.raises(InputError, match=r"open_clip_pytorch_model\.bin: refused to load"):
        load_clip(f"local-dir:{folder}", None, device="cpu")
    assert not marker.exists()


def test_plain_weights_in_a_local_dir_load(tmp_path, random_clip_files, clip):
    config, _, torch_ckpt = random_clip_files
    folder = _local_dir(tmp_path / "clip", config)
    (folder / "open_clip_pytorch_model.bin").write_bytes(torch_ckpt.read_bytes())
    local = load_clip(f"local-dir:{folder}", None, device="cpu")
    texts = ["a red circle", "striped"]
    np.testing.assert_allclose(local.encode_texts(texts), clip.encode_texts(texts), atol=1e-6)


def test_open_clip_loads_read_weights_only_whatever_the_environment(tmp_path, monkeypatch):
    # The guard around open_clip (hf-hub: weights are found by open_clip itself): its retry,
    # torch.load without weights_only, stays safe under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
    import os
    import pickle

    from audit.encoders.clip import _weights_only_loads
    from tests.hostile_files import typeerror_then_code_pickle

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    marker = tmp_path / "ran"
    evil = typeerror_then_code_pickle(tmp_path / "evil.bin", marker)
    with _weights_only_loads(), pytest.raises((pickle.UnpicklingError, TypeError)):
        torch.load(evil, map_location="cpu")
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # restored afterwards
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_a_torchscript_pretrained_is_refused_as_code(tmp_path, random_clip_files):
    # OpenAI's original CLIP .pt files are TorchScript archives: code, never run for weights.
    config = random_clip_files[0]
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "ViT-B-32.pt"
    scripted.save(str(path))
    with pytest.raises(InputError, match="TorchScript archive is code") as info:
        load_clip(str(config), str(path), device="cpu")
    assert "\n" not in str(info.value)


def test_sixteen_bit_grey_images_embed_like_their_eight_bit_copies(tmp_path, clip):
    """A 16-bit grey PNG holding v * 257 is the 8-bit image v at full range: it embeds the
    same (PIL's convert("RGB") clipped it at 255, so almost every pixel came out white)."""
    grey = np.random.default_rng(3).integers(0, 256, size=(40, 48), dtype=np.uint16)
    Image.fromarray(grey.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(grey * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16"
    paths = [str(tmp_path / "eight.png"), str(tmp_path / "sixteen.png")]
    store = finish_store(
        writer := StoreWriter(tmp_path / "s", clip.embed_dim),
        embed_images(paths, clip, writer),
    )
    x = store.read()
    np.testing.assert_allclose(x[1], x[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pixels", [np.float32, np.int32], ids=["float", "int32"])
def test_images_without_a_fixed_pixel_range_are_named_or_skipped(tmp_path, clip, pixels):
    _write_images(tmp_path, 2)
    Image.fromarray(np.full((40, 40), 1000, dtype=pixels)).save(tmp_path / "wide.tif")
    paths = [str(tmp_path / "img000.jpg"), str(tmp_path / "wide.tif"), str(tmp_path / "img001.png")]
    with pytest.raises(InputError, match=r"wide\.tif: ValueError: 32-bit .* no fixed range"):
        embed_images(paths, clip, StoreWriter(tmp_path / "a", clip.embed_dim))
    writer = StoreWriter(tmp_path / "b", clip.embed_dim)
    store = finish_store(writer, embed_images(paths, clip, writer, skip_bad_images=True))
    assert store.count == 2 and store.manifest["skipped"] == 1


def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path):
    _write_images(tmp_path / "d", 1)
    name = b"caf\xe9.png"  # Latin-1, as an old camera or Windows share may write it
    (tmp_path / "d" / "img000.jpg").rename(tmp_path / "d" / os.fsdecode(name))
    with pytest.raises(InputError, match=r"caf\\xe9\.png is not valid UTF-8: rename it"):
        list_images(tmp_path / "d")
