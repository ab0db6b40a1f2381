"""Image models on pixels: loading, streamed scoring, and one-line errors for every bad input.

The planted model scores an image by its mean red minus its mean blue channel, so the right
decision and margin of every solid-colour test image is known exactly.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from audit.errors import InputError
from audit.models import load_image_model, score_images
from audit.models.image_scoring import ToModelInput, image_paths

# Solid colours: reddish ones are the positive class, bluish ones the negative.
COLOURS = [(200, 30, 40), (20, 40, 210), (180, 90, 10), (60, 60, 190), (230, 200, 20)] * 3


class RedMinusBlue(nn.Module):
    """``mean(R) − mean(B)`` per image, returned in one of several output layouts."""

    def __init__(self, layout: str = "flat") -> None:
        super().__init__()
        self.layout = layout

    def forward(self, x: Tensor) -> Tensor:
        m = x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2))
        if self.layout == "column":
            return m[:, None]
        if self.layout == "two":
            return torch.stack([-m / 2, m / 2], dim=1)
        if self.layout == "prob":
            return torch.sigmoid(m)
        if self.layout == "three":
            return torch.stack([m, m, m], dim=1)
        if self.layout == "nan":
            return m / (m - m)
        if self.layout == "constant":
            return torch.sigmoid(m.abs() + 1.0)
        if self.layout == "one-sign":
            return m.abs() + 1.5
        return m


class Picky(nn.Module):
    """Raises on images that are not 16 × 16 (a model with a fixed input size)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] != 16:
            raise RuntimeError("expected 16x16 images")
        return x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2))


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(module.eval(), torch.rand(2, 3, 16, 16)), str(path))
    return path


def _export(module: nn.Module, path: Path, batch: int | None = None, size: int = 16) -> Path:
    example = torch.rand(batch or 4, 3, size, size)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, colour in enumerate(COLOURS):
        p = folder / f"{i:03d}.png"
        Image.new("RGB", (16, 16), colour).save(p)
        paths.append(str(p))
    return paths


def _expected(colours=COLOURS) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(colours, dtype=np.float64) / 255.0
    margin = c[:, 0] - c[:, 2]
    return (margin > 0).astype(np.int8), margin


def test_decisions_and_margins_are_the_planted_ones(tmp_path, images):
    model = load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt"))
    result = score_images(model, images, batch_size=4)
    decisions, margins = _expected()
    assert result.score_kind == "logit"
    np.testing.assert_array_equal(result.rows, np.arange(len(images)))
    np.testing.assert_array_equal(result.decisions, decisions)
    np.testing.assert_allclose(result.margins, margins, atol=1e-6)


@pytest.mark.parametrize("layout", ["column", "two", "prob"])
def test_every_output_layout_gives_the_same_decisions(tmp_path, images, layout):
    model = load_image_model(_script(RedMinusBlue(layout), tmp_path / "m.pt"))
    result = score_images(model, images, batch_size=5)
    decisions, margins = _expected()
    np.testing.assert_array_equal(result.decisions, decisions)
    expected_kind = {"column": "logit", "two": "two-class", "prob": "probability"}[layout]
    assert result.score_kind == expected_kind
    # A probability is read back to its logit; two class scores ±m/2 differ by m.
    np.testing.assert_allclose(result.margins, margins, atol=1e-5)


def test_a_subset_of_rows_in_the_given_order(tmp_path, images):
    model = load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt"))
    rows = np.array([7, 2, 3, 11, 0])
    result = score_images(model, images, rows, batch_size=2)
    decisions, _ = _expected()
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_array_equal(result.decisions, decisions[rows])
    np.testing.assert_array_equal(result.take([0, 11]), decisions[[0, 11]])
    with pytest.raises(InputError, match="no decision for 1 of the 2 rows"):
        result.take([0, 1])


def test_workers_stream_in_order_and_report_progress(tmp_path, images):
    model = load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt"))
    seen: list[tuple[int, int]] = []
    result = score_images(
        model, images, batch_size=4, num_workers=2, progress=lambda d, t: seen.append((d, t))
    )
    np.testing.assert_array_equal(result.decisions, _expected()[0])
    assert seen[0] == (0, len(images)) and seen[-1] == (len(images), len(images))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_exported_program_matches_torchscript(tmp_path, images):
    scripted = score_images(load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt")), images)
    exported_model = load_image_model(_export(RedMinusBlue(), tmp_path / "m.pt2"))
    assert exported_model.format == "torch.export" and exported_model.fixed_batch is None
    exported = score_images(exported_model, images, batch_size=4)
    np.testing.assert_array_equal(exported.decisions, scripted.decisions)
    np.testing.assert_allclose(exported.margins, scripted.margins, atol=1e-6)


def test_static_batch_and_size_of_an_exported_program_are_respected(tmp_path, images):
    """Exported with batch 4 and 8 × 8 images: 15 images go in batches of 4 (the last padded),
    resized from 16 × 16 to the program's size, which needs no --image-size."""
    model = load_image_model(_export(RedMinusBlue(), tmp_path / "m.pt2", batch=4, size=8))
    assert model.fixed_batch == 4 and model.fixed_size == (8, 8)
    result = score_images(model, images, batch_size=64)
    np.testing.assert_array_equal(result.decisions, _expected()[0])
    with pytest.raises(InputError, match="takes 8×8 images, not 16×16"):
        score_images(model, images, image_size=16)


def test_image_size_resizes_to_cover_and_centre_crops():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 8, 20))  # a blue band on the left
    tensor = ToModelInput(10)(image)
    assert tensor.shape == (3, 10, 10) and tensor.dtype == torch.float32
    # 40 × 20 → 20 × 10 (cover; the band: columns 0–3), centre crop keeps columns 5–14.
    assert float(tensor[2].max()) < 0.05 and float(tensor[0].min()) > 0.95
    assert ToModelInput(None)(image).shape == (3, 20, 40)


@pytest.mark.parametrize("size", [64, 100, 178, 224])
def test_a_square_size_is_torchvisions_evaluation_transform(size):
    """Predictions written with Resize(size), CenterCrop(size), ToTensor() see the same
    pixels as the audit's own scoring (CelebA's 178 × 218 images)."""
    from torchvision import transforms

    rng = np.random.default_rng(size)
    image = Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
    reference = transforms.Compose(
        [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
    )(image)
    torch.testing.assert_close(ToModelInput(size)(image), reference, rtol=0, atol=0)


def test_different_sizes_without_image_size_are_refused(tmp_path, images):
    Image.new("RGB", (20, 16), (200, 0, 0)).save(images[3])
    model = load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt"))
    with pytest.raises(InputError, match=r"003\.png.*set --image-size"):
        score_images(model, images, batch_size=8)
    # With --image-size every image is brought to one size.
    assert len(score_images(model, images, image_size=16, batch_size=8)) == len(images)


# -- bad inputs: one line each --------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("three", "returned shape [8, 3] for a batch of 8 images"),
        ("nan", "NaN or inf"),
        ("constant", "decisions are constant (class 1 for all 15 rows)"),
        ("one-sign", "decides the positive class for every image; check what it is given"),
    ],
)
def test_bad_outputs(tmp_path, images, layout, words):
    model = load_image_model(_script(RedMinusBlue(layout), tmp_path / "m.pt"))
    with pytest.raises(InputError) as exc:
        score_images(model, images, batch_size=8)
    assert words in _one_line(exc)


def test_a_model_that_raises(tmp_path, images):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Picky()), str(tmp_path / "picky.pt"))
    model = load_image_model(tmp_path / "picky.pt")
    with pytest.raises(InputError) as exc:
        score_images(model, images, image_size=24)
    assert "the model failed on a batch" in _one_line(exc) and "expected 16x16 images" in str(
        exc.value
    )
    assert len(score_images(model, images)) == len(images)


def test_a_model_returning_something_else(tmp_path, images):
    class Pair(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x.mean((1, 2, 3)), x.mean((1, 2, 3))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Pair()), str(tmp_path / "pair.pt"))
    with pytest.raises(InputError) as exc:
        score_images(load_image_model(tmp_path / "pair.pt"), images)
    assert "returned tuple, not a tensor" in _one_line(exc)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: Path(p).unlink(), "file not found"),
        (lambda p: Path(p).write_bytes(b"not a png at all"), "UnidentifiedImageError"),
        (lambda p: Path(p).write_bytes(Path(p).read_bytes()[:40]), "cannot use image"),
    ],
)
def test_missing_or_unreadable_images(tmp_path, images, damage, words):
    damage(images[6])
    model = load_image_model(_script(RedMinusBlue(), tmp_path / "m.pt"))
    with pytest.raises(InputError) as exc:
        score_images(model, images, batch_size=4)
    text = _one_line(exc)
    assert words in text and "006.png" in text and "store row 6" in text


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("m.pt", b"garbage", "not a TorchScript module"),
        ("m.pt2", b"garbage", "not a torch.export program"),
        ("m.onnx", b"garbage", "unknown image-model format"),
    ],
)
def test_unloadable_model_files(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_image_model(tmp_path / name)
    assert words in _one_line(exc)


def test_an_image_model_without_image_input_says_which_input_it_needs(tmp_path):
    from audit.fairness.classifiers import load_classifier

    (tmp_path / "m.pt2").write_bytes(b"never read: the suffix decides")
    with pytest.raises(InputError) as exc:
        load_classifier(tmp_path / "m.pt2", 8, "raw")
    text = _one_line(exc)
    assert "an image model cannot be read with --classifier-input raw" in text
    assert "it needs --classifier-input image" in text


def test_an_exported_program_named_pt_is_pointed_to_pt2(tmp_path):
    _export(RedMinusBlue(), tmp_path / "m.pt2")
    (tmp_path / "m.pt").write_bytes((tmp_path / "m.pt2").read_bytes())
    with pytest.raises(InputError, match=r"name it \.pt2"):
        load_image_model(tmp_path / "m.pt")


def test_a_torch_save_pickle_is_never_unpickled(tmp_path):
    """A pickled whole model (torch.save) is not TorchScript: refused, nothing executed."""
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    torch.save({"payload": _Payload(str(marker))}, buffer)
    (tmp_path / "m.pt").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="not a TorchScript module"):
        load_image_model(tmp_path / "m.pt")
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_missing_model_file(tmp_path):
    with pytest.raises(InputError, match="image model not found"):
        load_image_model(tmp_path / "nope.pt")


# -- where the images come from -------------------------------------------------------------


def test_paths_from_metadata_relative_to_the_store(tmp_path):
    store = tmp_path / "store"
    meta = pd.DataFrame({"id": ["a", "b"], "path": ["imgs/a.png", "/abs/b.png"]})
    assert image_paths(meta, store) == [str(store.resolve() / "imgs/a.png"), "/abs/b.png"]
    with pytest.raises(InputError, match="no 'path' column"):
        image_paths(meta.drop(columns="path"), store)
    with pytest.raises(InputError, match="row 1 has no image path"):
        image_paths(meta.assign(path=["x.png", None]), store)
    with pytest.raises(InputError, match=r"has no metadata\.csv"):
        image_paths(None, store)


def test_paths_from_a_celeba_root(tmp_path):
    from audit.data.celeba import read_celeba, write_fake_celeba

    root = write_fake_celeba(tmp_path / "celeba", n_images=12, layout="torchvision")
    table = read_celeba(root).table
    meta = pd.DataFrame({"id": table["id"].iloc[[5, 0, 9]].tolist()})
    paths = image_paths(meta, tmp_path / "store", celeba_root=root)
    assert paths == table["path"].iloc[[5, 0, 9]].tolist()
    assert all(Path(p).exists() for p in paths)
    with pytest.raises(InputError, match=r"not images of the CelebA folder.*'999999\.jpg'"):
        image_paths(pd.DataFrame({"id": ["000001.jpg", "999999.jpg"]}), tmp_path, root)


def test_the_odd_sized_image_of_a_batch_is_the_one_blamed():
    """A batch's size is its most common one: one 40×40 image among 32×32 ones is named, even
    when it comes first."""
    import torch

    from audit.models.image_scoring import _collate

    small, large = torch.zeros(3, 32, 32), torch.zeros(3, 40, 40)
    rows, stacked, bad = _collate([(7, large, ""), (8, small, ""), (9, small, "")])
    assert rows == [8, 9] and stacked.shape == (2, 3, 32, 32)
    assert [row for row, _ in bad] == [7] and "40×40, not 32×32" in bad[0][1]
