"""`msae-audit search` in the offline world: real images through the tiny CLIP, a Matryoshka
SAE trained on a rendered gallery and a concept bank named from the world's vocabulary.

The gallery, SAE and bank are built like the demo's (:mod:`audit.demo`), smaller: 4000 scenes
with independent, uniform attributes and 20 SAE epochs (the demo: 8000 scenes, 10 epochs; the
same number of steps). Queries are scenes rendered with a seed the gallery never used, saved as
PNG files and passed with ``--image``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import assert_one_line_error

# Builds a gallery, an SAE and a bank (~15 s once the tiny CLIP is cached).
pytestmark = pytest.mark.slow

#: (query colour, query shape, colour added with --set). Blue and red are the colours this
#: fixture's bank names for every world seed tried (0–3).
ADD_QUERIES = [
    ("green", "circle", "blue"),
    ("yellow", "star", "blue"),
    ("red", "heart", "blue"),
    ("purple", "triangle", "red"),
    ("blue", "square", "red"),
    ("green", "cross", "red"),
]
ADD_VALUE = 4.5  # in units of the concept's typical code (audit/search.py, docs/search.md)


@pytest.fixture(scope="module")
def world_search(tmp_path_factory):
    from audit.data.tinyclip import tiny_clip
    from audit.demo import (
        DemoSettings,
        build_demo_bank,
        embed_world,
        make_corpus,
        train_demo_sae,
    )
    from audit.store import open_store

    # One thread: on a small shared CPU, two OpenMP threads per process stall unpredictably
    # (docs/performance.md); this module's work is small enough for one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("search_world")
    settings = replace(DemoSettings(), n_corpus=4000, sae_epochs=20)
    tc = tiny_clip()
    clip = tc.load(device="cpu")
    embed_world(make_corpus(root / "corpus", settings), clip, root / "gallery", settings)
    train_demo_sae(root / "gallery", root / "sae", settings, device="cpu")
    build_demo_bank(root / "sae", root / "bank.yaml", clip)
    yield {
        "root": root,
        "gallery": root / "gallery",
        "sae": root / "sae",
        "bank": root / "bank.yaml",
        "meta": open_store(root / "gallery").metadata,
        "tiny_clip": tc,
    }
    torch.set_num_threads(threads)


def _query_image(path: Path, colour: str, shape: str, seed: int) -> Path:
    from audit.data import world

    scene = world.sample_scenes(1, seed=seed, colour=colour, shape=shape).iloc[0]
    world.render_scene(scene, seed=[777, seed], image_size=32).save(path)  # type: ignore[arg-type]
    return path


def _search_command(w) -> list:
    return ["search", "--gallery", w["gallery"], "--sae", w["sae"], "--bank", w["bank"]]


def _search(cli, w, *args, json_path: Path) -> dict:
    r = cli(*_search_command(w), "--top", 10, "--json", json_path, "--device", "cpu", *args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return json.loads(json_path.read_text())


def _column(w, result: dict, when: str, column: str) -> np.ndarray:
    rows = [item["row"] for item in result[when]]
    return w["meta"][column].to_numpy()[rows]


def test_adding_a_colour_retrieves_that_colour_and_keeps_the_shape(cli, world_search, tmp_path):
    w = world_search
    before_p, after_p, before_shape, after_shape = [], [], [], []
    for i, (colour, shape, added) in enumerate(ADD_QUERIES):
        image = _query_image(tmp_path / f"q{i}.png", colour, shape, seed=i)
        result = _search(
            cli,
            w,
            "--image",
            image,
            "--set",
            f"{added}={ADD_VALUE:g}",
            json_path=tmp_path / "s.json",
        )
        assert result["query"] == {"kind": "image", "path": str(image)}
        assert result["edits"][0]["name"] == added and result["edits"][0]["latents"]
        before_p.append(np.mean(_column(w, result, "before", "colour") == added))
        after_p.append(np.mean(_column(w, result, "after", "colour") == added))
        before_shape.append(np.mean(_column(w, result, "before", "shape") == shape))
        after_shape.append(np.mean(_column(w, result, "after", "shape") == shape))
    figures = {
        "p_before": np.mean(before_p),
        "p_after": np.mean(after_p),
        "shape_before": np.mean(before_shape),
        "shape_after": np.mean(after_shape),
    }
    # Measured with this fixture for world seeds 0–3 (DemoSettings.seed: another corpus, SAE
    # and bank each; the test runs seed 0), 2-core CPU VM, 2026-12-04: P(added colour) 0.02 before
    # the edit (seed 0), 0.63–0.85 after; the query's shape 0.95–1.00 before, 0.67–0.93
    # after (seed 0: 0.85 and 0.67). The trade-off is the value's: at 4 the colour drops to
    # 0.55 for seed 2, at 5 the shape to 0.62 for seed 0 (the bluest gallery images are large
    # squares, so too much colour pulls every query towards them). Before the edit was
    # expressed in units of the concept's typical code, each of the 11 latents the bank calls
    # "red" was set to 4x its own strength; seed 0's red queries then kept their shape in 0.47.
    # The bounds: half the results of the added colour and half of the query's shape (chance
    # for either: 1/6), at least 0.13 below every seed's figure.
    assert figures["p_after"] >= 0.5, figures
    assert figures["p_before"] <= 0.1, figures
    assert figures["shape_after"] >= 0.5, figures


REMOVE_QUERIES = [
    ("blue", "circle"),
    ("blue", "heart"),
    ("red", "star"),
    ("red", "square"),
    ("purple", "cross"),
    ("purple", "triangle"),
]


def test_removing_a_colour_lowers_its_activation_in_the_results(cli, world_search, tmp_path):
    w = world_search
    act_before, act_after, not_before, not_after = [], [], [], []
    for i, (colour, shape) in enumerate(REMOVE_QUERIES):
        image = _query_image(tmp_path / f"r{i}.png", colour, shape, seed=100 + i)
        result = _search(
            cli, w, "--image", image, "--remove", colour, json_path=tmp_path / "r.json"
        )
        edit = result["edits"][0]
        assert edit["name"] == colour and edit["strength"] == 0.0
        assert edit["edited_activation"] < edit["query_activation"]
        act_before.append(np.mean([item["activations"][colour] for item in result["before"]]))
        act_after.append(np.mean([item["activations"][colour] for item in result["after"]]))
        not_before.append(np.mean(_column(w, result, "before", "colour") != colour))
        not_after.append(np.mean(_column(w, result, "after", "colour") != colour))
    figures = (act_before, act_after, not_before, not_after)
    # Per query the results never get more of the removed colour (one blue circle keeps its
    # ten blue-circle neighbours: the named latents do not carry all of "blue"); on average the
    # activation drops by a third (measured: 3.9 → 2.7) and a quarter of the results change
    # colour (0 → 0.27). The bounds: a drop of at least 10 %, and some results change colour.
    assert all(a <= b + 1e-6 for a, b in zip(act_after, act_before, strict=True)), figures
    assert np.mean(act_after) <= 0.9 * np.mean(act_before), figures
    assert np.mean(not_after) > np.mean(not_before), figures


def test_text_query_and_html_gallery(cli, world_search, tmp_path):
    w = world_search
    result = _search(
        cli,
        w,
        "--text",
        "a red circle",
        "--html",
        tmp_path / "t.html",
        json_path=tmp_path / "t.json",
    )
    assert result["query"] == {"kind": "text", "text": "a red circle"}
    colours = _column(w, result, "before", "colour")
    shapes = _column(w, result, "before", "shape")
    # Measured: 10 of 10 are red circles (chance: 1/36); the zero-shot accuracy of the tiny
    # CLIP is ~99 % on colour and on shape.
    assert np.mean((colours == "red") & (shapes == "circle")) >= 0.5, list(
        zip(colours, shapes, strict=True)
    )
    html = (tmp_path / "t.html").read_text()
    assert "a red circle" in html and html.count("data:image/jpeg;base64,") == 20

    image = _query_image(tmp_path / "q.png", "green", "square", seed=7)
    r = cli(
        *_search_command(w), "--image", image, "--set", "blue=4", "--top", 5,
        "--html", tmp_path / "i.html",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "Neighbours after the edit" in r.stdout and "blue" in r.stdout
    html = (tmp_path / "i.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 1 + 2 * 5  # the query, before, after


def test_input_errors(cli, world_search, tmp_path):
    from safetensors.torch import load_file, save_file

    from audit.encoders import embed_images, finish_store, load_clip
    from audit.store import StoreWriter, open_store, write_store
    from tests.world_helpers import make_random_clip

    w = world_search
    base = _search_command(w)
    image = _query_image(tmp_path / "q.png", "green", "circle", seed=3)
    r = cli(*base, "--image", image, "--set", "bleu=4")
    assert_one_line_error(r, 2, "concept 'bleu' is not in bank")
    assert "did you mean: blue" in " ".join(r.stderr.split())
    assert_one_line_error(
        cli(*base, "--image", image, "--remove", "gren"), 2, "did you mean: green"
    )
    assert_one_line_error(
        cli(*base, "--image", tmp_path / "missing.png"), 2, "query image not found"
    )
    bomb = tmp_path / "bomb.png"  # 200 M pixels: PIL refuses it with an error no OSError
    Image.new("1", (20000, 10000)).save(bomb)
    assert_one_line_error(cli(*base, "--image", bomb), 2, "could be decompression bomb")

    # A gallery embedded with another CLIP (a random open_clip model, 32-dimensional).
    config, weights, _ = make_random_clip(tmp_path / "other_clip")
    other = load_clip(str(config), str(weights), device="cpu")
    writer = StoreWriter(
        tmp_path / "other_store", other.embed_dim, model=other.model_id,
        pretrained=other.pretrained, modality="image", normalized=False,
    )  # fmt: skip
    finish_store(writer, embed_images([str(image)] * 4, other, writer, batch_size=4))
    for query in (["--row", 0], ["--image", image], ["--text", "a red circle"]):
        r = cli("search", "--gallery", tmp_path / "other_store", *base[3:], *query)
        assert_one_line_error(r, 2, f"holds embeddings of CLIP model '{other.model_id}'")
        assert "the SAE was trained on" in r.stderr

    # Same width, but the manifest records another model, or other weights of the same model.
    x = open_store(w["gallery"]).read(0, 50)
    tc = w["tiny_clip"]
    write_store(tmp_path / "vitb", x, model="ViT-B-32", pretrained="openai", modality="image")
    r = cli("search", "--gallery", tmp_path / "vitb", *base[3:], "--row", 0)
    assert_one_line_error(r, 2, "holds embeddings of CLIP model 'ViT-B-32'")
    perturbed = tmp_path / "perturbed.safetensors"
    state = load_file(str(tc.checkpoint_path))
    state = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()
    }
    save_file(state, str(perturbed))
    write_store(
        tmp_path / "reweighted", x, model=str(tc.config_path.resolve()),
        pretrained=str(perturbed.resolve()), modality="image",
    )  # fmt: skip
    r = cli("search", "--gallery", tmp_path / "reweighted", *base[3:], "--row", 0)
    assert_one_line_error(r, 2, "with weights")
    # A query embedded with other weights than the gallery's (--pretrained overrides them).
    r = cli(*base, "--image", image, "--pretrained", perturbed)
    assert_one_line_error(r, 2, "the query would be embedded with weights")
