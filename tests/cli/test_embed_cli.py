"""``msae-audit embed images|texts|celeba`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.data.celeba import write_fake_celeba
from audit.store import open_store
from tests.conftest import assert_one_line_error
from tests.world_helpers import make_random_clip


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> list[str]:
    config, weights, _ = make_random_clip(tmp_path_factory.mktemp("clip"))
    return ["--model", str(config), "--pretrained", str(weights), "--device", "cpu", "-q"]


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_embed_images_folder_and_manifest(cli, tmp_path, model_args):
    _images(tmp_path / "imgs", 5)
    result = cli(
        "embed", "images", tmp_path / "imgs", *model_args, "--out", tmp_path / "s", "--workers", "0"
    )
    assert result.exit_code == 0, result.stderr
    store = open_store(tmp_path / "s")
    assert store.count == 5 and store.dim == 32 and store.modality == "image"
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["normalized"] is False and manifest["model"].endswith("tinyref.json")
    assert store.metadata["id"].tolist() == [f"{i}.png" for i in range(5)]

    csv = tmp_path / "m.csv"
    pd.DataFrame({"path": ["imgs/3.png", "imgs/1.png"], "label": ["b", "a"]}).to_csv(
        csv, index=False
    )
    result = cli("embed", "images", csv, *model_args, "--out", tmp_path / "s2", "--normalize")
    assert result.exit_code == 0, result.stderr
    store2 = open_store(tmp_path / "s2")
    assert store2.metadata["label"].tolist() == ["b", "a"] and store2.normalized
    np.testing.assert_allclose(
        store2.read()[0], store.read()[3] / np.linalg.norm(store.read()[3]), atol=1e-5
    )
    # An existing store is not replaced silently.
    again = cli("embed", "images", csv, *model_args, "--out", tmp_path / "s2", "--normalize")
    assert_one_line_error(again, 2, "--overwrite")


def test_unreadable_image_exits_2_naming_the_file(cli, tmp_path, model_args):
    _images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "zz_broken.png").write_bytes(b"not an image")
    result = cli("embed", "images", tmp_path / "imgs", *model_args, "--out", tmp_path / "s")
    assert_one_line_error(result, 2, "zz_broken.png")
    result = cli(
        "embed",
        "images",
        tmp_path / "imgs",
        *model_args,
        "--out",
        tmp_path / "s",
        "--skip-bad-images",
    )
    assert result.exit_code == 0, result.stderr
    assert "skipped 1" in " ".join(result.stderr.split())
    assert pd.read_csv(tmp_path / "s" / "skipped.csv")["path"].str.endswith("zz_broken.png").all()
    assert open_store(tmp_path / "s").count == 3


def test_files_left_out_of_a_folder_are_named_in_one_warning(cli, tmp_path, model_args):
    _images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "moved.png").symlink_to(tmp_path / "elsewhere.png")
    (tmp_path / "imgs" / "IMG_1.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    result = cli("embed", "images", tmp_path / "imgs", *model_args, "--out", tmp_path / "s")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "left out" in line]
    assert len(warnings) == 1, result.stderr
    assert "2 file(s)" in warnings[0] and "1 dangling symlink (moved.png)" in warnings[0]
    assert "1 not an image type that is read (IMG_1.HEIC)" in warnings[0]
    assert open_store(tmp_path / "s").count == 3


def test_large_but_allowed_images_are_read_without_a_warning(
    cli, tmp_path, model_args, monkeypatch
):
    """Between PIL's warning size and its refusal size an image is read as it is; PIL's
    DecompressionBombWarning (two lines per image) does not reach the user."""
    import warnings

    _images(tmp_path / "imgs", 2)  # 400 pixels each
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # warn above 300, refuse above 600
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("embed", "images", tmp_path / "imgs", *model_args, "--out", tmp_path / "s",
                     "--workers", "0")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert open_store(tmp_path / "s").count == 2


def test_embed_texts_rows_follow_the_vocabulary_rules(cli, tmp_path, model_args):
    vocab = tmp_path / "v.txt"
    vocab.write_text("# colours\nred\n\nblue\nRed\ngreen\n", encoding="utf-8")
    result = cli("embed", "texts", vocab, *model_args, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.stderr
    store = open_store(tmp_path / "t")
    assert store.metadata["text"].tolist() == ["red", "blue", "green"] and store.modality == "text"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00binary")
    assert_one_line_error(
        cli("embed", "texts", bad, *model_args, "--out", tmp_path / "u"), 2, "binary"
    )


def test_embed_celeba_writes_attributes_and_split(cli, tmp_path, model_args):
    root = write_fake_celeba(tmp_path / "celeba", n_images=12, layout="kaggle", image_size=12)
    result = cli(
        "embed", "celeba", "--root", root, *model_args, "--out", tmp_path / "c", "--workers", "0"
    )
    assert result.exit_code == 0, result.stderr
    store = open_store(tmp_path / "c")
    meta = store.metadata
    assert store.count == 12 and {"Male", "Blond_Hair", "split", "partition", "id", "path"} <= set(
        meta
    )
    assert meta.shape[1] == 40 + 4 and set(meta["Male"]) <= {0, 1}
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["celeba_layout"] == "kaggle"
    result = cli(
        "embed", "celeba", "--root", root, *model_args, "--out", tmp_path / "d", "--split", "test"
    )
    assert result.exit_code == 0 and set(open_store(tmp_path / "d").metadata["split"]) == {"test"}


def test_embed_celeba_with_a_relative_root_writes_paths_that_resolve(
    cli, tmp_path, model_args, monkeypatch
):
    """A store resolves relative image paths against its own folder, so paths relative to the
    working directory (``--root celeba``) would point nowhere: they are written absolute."""
    write_fake_celeba(tmp_path / "data" / "celeba", n_images=6, image_size=12)
    monkeypatch.chdir(tmp_path / "data")
    result = cli("embed", "celeba", "--root", "celeba", *model_args, "--out", "store")
    assert result.exit_code == 0, result.stderr
    monkeypatch.chdir(tmp_path)
    store = open_store(tmp_path / "data" / "store")
    paths = store.metadata["path"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths), list(paths)


def test_missing_celeba_files_show_the_expected_tree(cli, tmp_path, model_args):
    root = write_fake_celeba(tmp_path / "celeba", n_images=4)
    (root / "list_eval_partition.txt").unlink()
    result = cli("embed", "celeba", "--root", root, *model_args, "--out", tmp_path / "c")
    assert_one_line_error(result, 2, "list_eval_partition.txt is missing", details=True)
    assert "img_align_celeba/" in result.stderr and "list_attr_celeba.txt" in result.stderr
    result = cli(
        "embed", "celeba", "--root", tmp_path / "nowhere", *model_args, "--out", tmp_path / "c"
    )
    assert_one_line_error(result, 2, "CelebA root not found", details=True)


def test_model_errors_exit_2(cli, tmp_path):
    _images(tmp_path / "imgs", 1)
    result = cli(
        "embed",
        "images",
        tmp_path / "imgs",
        "--model",
        "ViT-B-32-quickgelu",
        "--pretrained",
        "openai",
        "--out",
        tmp_path / "s",
    )
    assert_one_line_error(result, 2, "downloads are disabled")
    result = cli(
        "embed", "images", tmp_path / "imgs", "--model", "ViT-B-32", "--out", tmp_path / "s"
    )
    assert_one_line_error(result, 2, "--pretrained is required")


@pytest.mark.slow
def test_torchrun_embed_equals_single_process(cli, tmp_path, model_args):
    """``torchrun --nproc-per-node 2 -m audit embed images``: each rank embeds its block into a
    part store, rank 0 merges them; rows, metadata and the skipped-image record equal a
    single-process run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    _images(tmp_path / "imgs", 11)
    (tmp_path / "imgs" / "7.png").write_bytes(b"not a png")  # on rank 1's block
    args = ["embed", "images", str(tmp_path / "imgs"), *model_args, "--workers", "0",
            "--skip-bad-images", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("MSAE_AUDIT_DEBUG", None)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "audit", *args, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("Embedding store") == 1  # rank 0 alone reports
    single = cli(*args, "--out", tmp_path / "single")
    assert single.exit_code == 0, single.stderr
    ddp, one = open_store(tmp_path / "ddp"), open_store(tmp_path / "single")
    assert ddp.count == one.count == 10
    np.testing.assert_allclose(ddp.read(), one.read(), atol=1e-6)
    pd.testing.assert_frame_equal(ddp.metadata, one.metadata)
    skipped = pd.read_csv(tmp_path / "ddp" / "skipped.csv")
    pd.testing.assert_frame_equal(skipped, pd.read_csv(tmp_path / "single" / "skipped.csv"))
    # Sorted by relative path: 0, 1, 10, 2, …, so 7.png is input row 8 (in rank 1's block).
    assert skipped["row"].tolist() == [8] and skipped["path"].iloc[0].endswith("7.png")
    assert ddp.manifest["skipped"] == 1
    assert not (tmp_path / "ddp" / ".ranks").exists()
