"""The bad-input matrix, continued for the user's own model: image models and predictions files
given to ``msae-audit audit``. Same runner and assertions as :mod:`tests.test_bad_inputs` (one
``error:`` line naming the problem, exit code 2, no traceback). docs/robustness.md's matrix
lists these after the general cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_bad_inputs import Case, Ctx, audit, shared, with_rows  # noqa: F401 (shared: a fixture)
from tests.test_bad_inputs import test_bad_input as run_case

# --- predictions files ------------------------------------------------------------------------


def _ids(ctx: Ctx) -> list[str]:
    return ctx.labels()["id"].astype(str).tolist()


def predictions(ctx: Ctx, **columns: object) -> Path:
    """A predictions CSV over every row (``columns`` replace or add columns)."""
    ids = _ids(ctx)
    rng = np.random.default_rng(0)
    data = {"id": ids, "score": rng.normal(size=len(ids))}
    data.update(columns)
    path = ctx.tmp / "pred.csv"
    pd.DataFrame({k: v for k, v in data.items() if v is not None}).to_csv(path, index=False)
    return path


def with_predictions(ctx: Ctx, path: Path, *extra: object) -> list:
    return audit(ctx, "--predictions", path, *extra, classifier=None)


def _dropped(ctx: Ctx) -> Path:
    path = predictions(ctx)
    frame = pd.read_csv(path, dtype={"id": str})
    frame.iloc[3:].to_csv(path, index=False)
    return path


def _duplicated(ctx: Ctx) -> Path:
    path = predictions(ctx)
    frame = pd.read_csv(path, dtype={"id": str})
    pd.concat([frame, frame.iloc[:1]]).to_csv(path, index=False)
    return path


def _unknown(ctx: Ctx) -> Path:
    ids = _ids(ctx)
    return predictions(ctx, id=["ghost", *ids[1:]])


def _float_ids(ctx: Ctx) -> list:
    """Integer ids in the labels, the same ids written as floats (``7.0``) in the predictions, as
    pandas writes an integer column that has an empty cell."""
    labels = ctx.labels().assign(id=range(1000))
    head = np.load(ctx.world["head"])  # the world's linear head: decisions a surrogate can fit
    scores = ctx.embeddings() @ head["weight"][0] + head["bias"][0]
    path = predictions(ctx, id=[f"{i}.0" for i in range(1000)], score=scores)
    return audit(
        ctx, "--predictions", path, classifier=None, **with_rows(ctx, ctx.embeddings(), labels)
    )


# --- image models -----------------------------------------------------------------------------


class _WrongShape(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))  # [B, 3]


class _Scalar(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean()  # one 0-d score for the whole batch


class _NaN(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3)) * float("nan")


class _Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ torch.ones(5)  # not [B, 5]: a RuntimeError inside the model


class _Constant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3)) * 0 + 1.0  # every image "positive"


class _AllNegative(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -1.0 - x.mean((1, 2, 3))  # a logit < -1 for every image: one decision


def image_model(ctx: Ctx, module: torch.nn.Module) -> Path:
    path = ctx.tmp / f"{type(module).__name__.strip('_').lower()}.pt"
    torch.jit.script(module).save(str(path))
    return path


def state_dict(ctx: Ctx) -> Path:
    """What a user most often has for "my model": ``torch.save(model.state_dict(), ...)``."""
    path = ctx.tmp / "model.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return path


def image_labels(ctx: Ctx, missing: int | None = None) -> Path:
    """The world's labels with a ``path`` column of tiny images (``missing``: that row's image
    is not written)."""
    from PIL import Image

    labels = ctx.labels()
    folder = ctx.tmp / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(len(labels)):
        p = folder / f"{i:05d}.png"
        if i != missing:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    labels["path"] = paths
    out = ctx.tmp / "labels-images.csv"
    labels.to_csv(out, index=False)
    return out


def with_image_model(ctx: Ctx, module: torch.nn.Module, missing: int | None = None) -> list:
    return audit(
        ctx, "--classifier-input", "image", "--workers", "0",
        classifier=image_model(ctx, module), labels=image_labels(ctx, missing),
    )  # fmt: skip


OWN_MODEL_CASES: list[Case] = [
    # --- predictions files ------------------------------------------------------------------
    Case("predictions-and-classifier", "both --classifier and --predictions", "audit",
         "give --classifier or --predictions, not both", 2,
         lambda c: audit(c, "--predictions", predictions(c))),
    Case("predictions-image-size", "--image-size with --predictions", "audit",
         "--image-size does not apply to --predictions", 2,
         lambda c: with_predictions(c, predictions(c), "--image-size", "32")),
    Case("negative-workers", "--workers -1 with an image model", "audit",
         "--workers must be 0 or more, got -1", 2,
         lambda c: audit(c, "--classifier-input", "image", "--workers", "-1",
                         classifier=image_model(c, _Constant()), labels=image_labels(c))),
    Case("zero-image-batch", "--image-batch-size 0 with an image model", "audit",
         "--image-batch-size must be positive, got 0", 2,
         lambda c: audit(c, "--classifier-input", "image", "--image-batch-size", "0",
                         classifier=image_model(c, _Constant()), labels=image_labels(c))),
    Case("predictions-not-csv", "--predictions with a file that is not .csv", "audit",
         "--predictions takes a .csv file", 2,
         lambda c: with_predictions(c, c.text("pred.json", "{}"))),
    Case("predictions-missing-ids", "predictions without rows the audit needs", "audit",
         "no decision for 3 of the", 2,
         lambda c: with_predictions(c, _dropped(c))),
    Case("predictions-duplicate-id", "predictions with an id twice", "audit",
         "appears more than once", 2,
         lambda c: with_predictions(c, _duplicated(c))),
    Case("predictions-unknown-id", "predictions with an id that is not a store row", "audit",
         "not rows of the store", 2,
         lambda c: with_predictions(c, _unknown(c))),
    Case("predictions-neither", "scores that are neither logits nor probabilities (0–100)",
         "audit", "neither probabilities nor logits", 2,
         lambda c: with_predictions(c, predictions(c, score=np.linspace(1, 100, 1000)))),
    Case("predictions-bad-label", "labels other than 0/1", "audit",
         "labels must be 0 or 1", 2,
         lambda c: with_predictions(c, predictions(c, score=None, label=["yes"] * 1000))),
    Case("predictions-constant", "predictions with one decision for every row", "audit",
         "decisions are constant", 2,
         lambda c: with_predictions(c, predictions(c, score=None, label=[1] * 1000))),
    Case("predictions-float-ids", "predictions whose ids are written as floats (7.0) for "
         "integer ids", "audit", "", 0, _float_ids,
         readme="accepted: `7.0` is the id `7` (`7.5` is no id of the store: exit 2)"),
    # --- image models -----------------------------------------------------------------------
    Case("image-model-no-paths", "an image model on a store without image paths", "audit",
         "has no 'path' column", 2,
         lambda c: audit(c, "--classifier-input", "image", classifier=image_model(c, _NaN()))),
    Case("image-model-wrong-shape", "an image model returning [B, 3]", "audit",
         "expected [B], [B, 1] or [B, 2] scores", 2,
         lambda c: with_image_model(c, _WrongShape())),
    Case("image-model-scalar", "an image model returning one 0-d score for the batch", "audit",
         "returned shape [] for a batch of", 2,
         lambda c: with_image_model(c, _Scalar())),
    Case("image-model-nan", "an image model returning NaN", "audit",
         "returned NaN or inf", 2,
         lambda c: with_image_model(c, _NaN())),
    Case("image-model-raises", "an image model that raises", "audit",
         "the model failed on a batch of shape", 2,
         lambda c: with_image_model(c, _Raises())),
    Case("image-model-missing-image", "a row whose image is missing", "audit",
         "cannot use image", 2,
         lambda c: with_image_model(c, _WrongShape(), missing=0)),
    Case("image-model-constant", "an image model deciding one class for every image", "audit",
         "decisions are constant", 2,
         lambda c: with_image_model(c, _Constant())),
    Case("image-model-one-sign", "an image model whose single output is < -1 on every image",
         "audit", "decides the negative class for every image; check what it is given "
         "(--image-size", 2,
         lambda c: with_image_model(c, _AllNegative())),
    Case("image-model-state-dict", "a torch.save state dict as the image model", "audit",
         "a torch.save checkpoint (a pickled model or a state dict), which is never unpickled; "
         "save the model as code with torch.jit.script", 2,
         lambda c: audit(c, "--classifier-input", "image", "--workers", "0",
                         classifier=state_dict(c), labels=image_labels(c))),
    Case("image-input-linear-head", "--classifier-input image with a linear head", "audit",
         "cannot be read with --classifier-input image", 2,
         lambda c: audit(c, "--classifier-input", "image")),
]  # fmt: skip


@pytest.mark.parametrize("case", OWN_MODEL_CASES, ids=[c.id for c in OWN_MODEL_CASES])
def test_own_model_bad_input(case: Case, shared, tmp_path, monkeypatch, capsys):  # noqa: F811
    run_case(case, shared, tmp_path, monkeypatch, capsys)
