"""docs/own-models.md's CelebA recipe runs as written, on a synthetic CelebA-layout folder.

The two Python blocks of the recipe are executed in order (with the CelebA root and the input
size pointed at the test's folder) after a ResNet-18 checkpoint with random weights is written
where the recipe loads it. The exported TorchScript and ``.pt2`` models, scored by the audit
from the CelebA root, and the predictions file the recipe writes must decide alike. The
recipe's two ``msae-audit celeba`` commands then run as written (pointed at the test's folder,
an SAE and bank of a planted world, and a store of its embeddings under CelebA's file names)
and must give the same report of the same decisions.
"""

from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import torch

from audit.data.celeba import read_celeba, write_fake_celeba
from audit.models import image_paths, load_image_model, load_predictions, score_images

DOC = Path(__file__).resolve().parent.parent / "docs" / "own-models.md"
SIZE = 64


def recipe_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## CelebA recipe", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def recipe_commands() -> list[list[str]]:
    """The recipe's shell commands, as argument lists without the program name."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## CelebA recipe", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [shlex.split(b.replace("\\\n", " "))[1:] for b in blocks]


def _checkpoint(path: Path, images: list[Path]) -> None:
    """A random ResNet-18 whose decisions split the synthetic images (bias set to the median
    margin), saved as a state dict like a fine-tuned one."""
    import torchvision
    from PIL import Image
    from torchvision import transforms

    torch.manual_seed(0)
    backbone = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    preprocess = transforms.Compose(
        [transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor()]
    )
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
        scores = backbone((x - mean) / std)
        margin = scores[:, 1] - scores[:, 0]
        backbone.fc.bias[1] -= float(margin.median()) + 1e-4
    torch.save(backbone.state_dict(), path)


def _noise_images(paths) -> None:
    """CelebA's shape (218 × 178, portrait), so the resize and the centre crop both matter."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (109, 89, 3), dtype=np.uint8)).save(p)


def test_the_recipe_blocks_are_found():
    blocks = recipe_blocks()
    assert len(blocks) == 2
    assert "torch.jit.trace" in blocks[0] and "torch.export.save" in blocks[0]
    assert "pred.csv" in blocks[1]


def _run_recipe_blocks(tmp_path: Path, n_images: int) -> Path:
    """The recipe's Python blocks on a synthetic CelebA folder; returns its root."""
    root = write_fake_celeba(tmp_path / "celeba", n_images=n_images, image_size=8)
    celeba = read_celeba(root)
    _noise_images(celeba.table["path"])
    _checkpoint(tmp_path / "gender_resnet18.pth", sorted(celeba.images_dir.glob("*.jpg")))
    namespace: dict = {}
    for block in recipe_blocks():
        block = re.sub(r"^CELEBA = .*$", f"CELEBA = Path({str(root)!r})", block, flags=re.M)
        block = re.sub(r"^SIZE = .*$", f"SIZE = {SIZE}", block, flags=re.M)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            exec(compile(block, str(DOC), "exec"), namespace)
    for name in ("gender.pt", "gender.pt2", "pred.csv"):
        assert (tmp_path / name).exists(), name
    return root


def test_the_celeba_recipe_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _run_recipe_blocks(tmp_path, 24)
    celeba = read_celeba(root)

    ids = celeba.table["id"]
    paths = image_paths(celeba.table[["id"]], tmp_path / "store", celeba_root=root)
    scored = {
        name: score_images(load_image_model(tmp_path / name), paths, image_size=SIZE)
        for name in ("gender.pt", "gender.pt2")
    }
    predictions = load_predictions(tmp_path / "pred.csv", ids.tolist())
    assert predictions.score_kind == "logit" and len(predictions) == len(ids)
    decisions = predictions.take(np.arange(len(ids)))
    assert 0 < decisions.sum() < len(ids)
    for result in scored.values():
        assert result.score_kind == "two-class"
        np.testing.assert_array_equal(result.decisions, decisions)
        np.testing.assert_allclose(result.margins, predictions.margins, atol=1e-4)


def test_the_exported_model_normalises_its_own_input(tmp_path, monkeypatch):
    """The recipe's wrapper is the normalisation: feeding [0, 1] pixels to the export equals
    feeding ImageNet-normalised pixels to the bare backbone."""
    import torchvision

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    bare = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    torch.save(bare.state_dict(), tmp_path / "gender_resnet18.pth")
    block = re.sub(r"^SIZE = .*$", f"SIZE = {SIZE}", recipe_blocks()[0], flags=re.M)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, str(DOC), "exec"), namespace)
    x = torch.rand(3, 3, SIZE, SIZE)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        want = bare((x - mean) / std)
        got = load_image_model(tmp_path / "gender.pt").module(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _planted_inputs(tmp_path: Path, ids: np.ndarray) -> dict[str, str]:
    """An SAE, a bank and a store of a planted world's embeddings, one row per CelebA image."""
    import pandas as pd

    from audit.store import write_store
    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=len(ids), seed=2)
    paths = save_planted_world(world, tmp_path / "planted")
    store = write_store(
        tmp_path / "celeba-store", world.embeddings, pd.DataFrame({"id": ids}),
        model="planted-atoms", overwrite=True,
    )  # fmt: skip
    return {"sae/": str(paths["sae"]), "celeba": str(paths["bank"]), "store": str(store.path)}


def test_the_recipe_commands_audit_the_model_and_its_predictions(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = _run_recipe_blocks(tmp_path, 300)
    inputs = _planted_inputs(tmp_path, read_celeba(root).table["id"].to_numpy())
    swap = {"/data/celeba": str(root), "224": str(SIZE), **inputs}
    reports = {}
    for i, args in enumerate(recipe_commands()):
        args = [args[0], *(swap.get(a, a) for a in args[1:])]  # the command stays "celeba"
        out = tmp_path / f"r{i}"
        result = cli(
            *args, "--embeddings", inputs["store"], "--json", out.with_suffix(".json"),
            "--junit", out.with_suffix(".xml"), "--quiet", "--workers", "0",
        )  # fmt: skip
        # Random weights on noise images: the CLIP-space surrogate may not copy them (exit 3).
        assert result.exit_code in (0, 3), result.stderr
        reports[args[args.index("--classifier") + 1] if "--classifier" in args else "pred"] = (
            json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        )
    image, predictions = reports["gender.pt"], reports["pred"]
    assert image["classifier"]["kind"] == "image"
    assert image["classifier"]["image_size"] == [SIZE, SIZE]
    assert predictions["classifier"]["kind"] == "predictions"
    assert image["groups"] == predictions["groups"]  # the same decisions on the test split
    assert image["surrogate"]["agreement"] == predictions["surrogate"]["agreement"]
    assert (tmp_path / "report.html").exists()
