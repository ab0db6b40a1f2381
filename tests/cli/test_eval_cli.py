"""`msae-audit eval` and `msae-audit compare` end to end, and their input errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from audit.sae import load_sae, sae_fingerprint
from tests.conftest import assert_one_line_error
from tests.eval_fixtures import planted_store, trained_matryoshka
from tests.schemas import assert_valid

EVAL_FIELDS = (
    "schema",
    "l0",
    "frac_zeros",
    "fvu",
    "fvu_per_sample",
    "cosine",
    "cknna",
    "decoder_orthogonality",
    "dead_latents",
    "progressive",
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices on a shared 2-core machine: see test_evaluate.py
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evalcli")
    store = planted_store(root / "store", rows=1500)
    sae_dir = trained_matryoshka(store, root / "sae", n_latents=64)
    x = store.read()
    labels = root / "labels.csv"
    pd.DataFrame({"side": np.where(x[:, 0] > np.median(x[:, 0]), "a", "b")}).to_csv(
        labels, index=False
    )
    return store, sae_dir, labels


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_eval_writes_every_spec_field(cli, world, tmp_path):
    store, sae_dir, labels = world
    out = tmp_path / "eval.json"
    r = cli(
        "eval",
        "--sae",
        sae_dir,
        "--embeddings",
        store.path,
        "--json",
        out,
        "--labels",
        labels,
        "--label-column",
        "side",
        "--chunk-rows",
        "400",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.stderr
    result = _strict_json(out)
    for key in EVAL_FIELDS:
        assert key in result, key
    assert result["schema"] == "msae-audit/eval"
    assert all(isinstance(result[k], float) for k in EVAL_FIELDS[1:8])
    assert isinstance(result["dead_latents"], int)
    assert [p["k"] for p in result["progressive"]] == [16, 32, 64]
    assert all(
        {"k", "fvu", "cosine", "l0", "fvu_per_sample"} <= set(p) for p in result["progressive"]
    )
    assert result["sae"]["fingerprint"] == sae_fingerprint(load_sae(sae_dir))
    assert result["sae"]["path"] == str(sae_dir)
    assert result["store"]["count"] == 1500 and result["store"]["dim"] == 32
    assert result["inference"]["code"] == "relu(pre)" and result["inference"]["topk"] is None
    assert result["timing"]["seconds_total"] > 0
    assert result["lp_kl"] >= 0 and 0.5 < result["lp_agreement"] <= 1
    assert result["linear_probe"]["label_column"] == "side"
    assert result["settings"]["chunk_rows"] == 400
    assert "FVU per sample" in r.stdout and "Progressive recovery" in r.stdout


def test_eval_on_a_plain_npy_with_topk(cli, world, tmp_path):
    store, sae_dir, _ = world
    npy = tmp_path / "x.npy"
    np.save(npy, store.read())
    out = tmp_path / "eval.json"
    r = cli("eval", "--sae", sae_dir, "--embeddings", npy, "--json", out, "--topk", "16", "-q")
    assert r.exit_code == 0, r.stderr
    result = _strict_json(out)
    assert result["inference"]["topk"] == 16 and result["l0"] <= 16
    assert result["lp_kl"] is None and result["linear_probe"] is None


def _corrupt_copy(sae_dir, tmp_path):
    bad = tmp_path / "bad_sae"
    shutil.copytree(sae_dir, bad)
    weights = bad / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return bad


@pytest.mark.parametrize(
    "case",
    [
        "dimension",
        "label_column",
        "label_rows",
        "corrupt_sae",
        "missing_sae",
        "labels_without_column",
        "bad_topk",
        "nan_rows",
    ],
)
def test_eval_input_errors_exit_2_with_one_line(cli, world, tmp_path, case):
    store, sae_dir, labels = world
    args = ["eval", "--sae", sae_dir, "--embeddings", store.path, "-q"]
    if case == "dimension":
        other = planted_store(tmp_path / "s16", rows=50, dim=16)
        args[4], expected = other.path, "dimension 16"
    elif case == "label_column":
        args += ["--labels", labels, "--label-column", "nope"]
        expected = "label column 'nope' not found"
    elif case == "label_rows":
        short = tmp_path / "short.csv"
        pd.read_csv(labels).iloc[:10].to_csv(short, index=False)
        args += ["--labels", short, "--label-column", "side"]
        expected = "10 rows"
    elif case == "corrupt_sae":
        args[2], expected = _corrupt_copy(sae_dir, tmp_path), "corrupt"
    elif case == "missing_sae":
        args[2], expected = tmp_path / "nowhere", "not found"
    elif case == "labels_without_column":
        args += ["--labels", labels]
        expected = "--label-column"
    elif case == "bad_topk":
        args += ["--topk", "0"]
        expected = "--topk"
    else:
        x = store.read().copy()
        x[7, 3] = np.nan
        npy = tmp_path / "nan.npy"
        np.save(npy, x)
        args[4], expected = npy, "row 7"
    assert_one_line_error(cli(*args), 2, expected)
    assert len([line for line in cli(*args).stderr.splitlines() if line.strip()]) == 1


def test_compare_writes_table_json_and_self_contained_html(cli, world, tmp_path):
    store, sae_dir, _ = world
    odd = tmp_path / 'm<b>&"x'  # a folder name that must be escaped in HTML
    shutil.copytree(sae_dir, odd)
    html, out = tmp_path / "cmp.html", tmp_path / "cmp.json"
    r = cli(
        "compare",
        sae_dir,
        odd,
        "--embeddings",
        store.path,
        "--html",
        html,
        "--json",
        out,
        "--cknna-samples",
        "300",
        "-q",
    )
    assert r.exit_code == 0, r.stderr
    comparison = _strict_json(out)
    assert comparison["schema"] == "msae-audit/compare"
    assert [m["name"] for m in comparison["models"]] == ["sae", 'm<b>&"x']
    assert all(m["schema"] == "msae-audit/eval" for m in comparison["models"])
    for model in comparison["models"]:  # each entry is the eval JSON it says it is
        assert_valid(model, "eval")
    assert comparison["models"][0]["fvu"] == comparison["models"][1]["fvu"]
    page = html.read_text(encoding="utf-8")
    assert page.count("<svg") == 3
    assert "m&lt;b&gt;&amp;&#34;x" in page and 'm<b>&"x' not in page
    assert "<script" not in page.lower()
    # No network requests: no external URLs and no src/href attributes at all.
    assert not re.search(r"https?://", page)
    assert not re.search(r"\s(src|href)\s*=", page)
    assert "frac. zeros" in r.stdout and 'm<b>&"x' in r.stdout


def test_compare_refuses_a_corrupt_sae_before_evaluating(cli, world, tmp_path):
    store, sae_dir, _ = world
    bad = _corrupt_copy(sae_dir, tmp_path)
    r = cli("compare", sae_dir, bad, "--embeddings", store.path, "-q")
    assert_one_line_error(r, 2, "corrupt")
