"""`msae-audit search`: row queries, JSON/HTML outputs and its input errors."""

from __future__ import annotations

import json

import numpy as np

from audit.concepts import save_bank
from audit.sae import save_sae
from tests.conftest import assert_one_line_error
from tests.test_search import _world


def _setup(tmp_path):
    sae, store, codes, bank = _world(tmp_path)
    save_sae(sae, tmp_path / "sae")
    save_bank(bank, tmp_path / "bank.yaml")
    return store, codes


def test_row_query_with_edits_writes_json_and_html(cli, tmp_path):
    store, codes = _setup(tmp_path)
    row = int(np.nonzero(codes[:, 5] == 0)[0][0])
    r = cli(
        "search",
        "--gallery",
        store.path,
        "--sae",
        tmp_path / "sae",
        "--bank",
        tmp_path / "bank.yaml",
        "--row",
        row,
        "--set",
        "atom5=1.5",
        "--top",
        10,
        "--json",
        tmp_path / "s.json",
        "--html",
        tmp_path / "s.html",
    )
    assert r.exit_code == 0, r.stderr
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["schema"] == "msae-audit/search" and len(result["after"]) == 10
    assert all(item["row"] != row for item in result["after"])
    after_has = np.mean([codes[item["row"], 5] > 0 for item in result["after"]])
    before_has = np.mean([codes[item["row"], 5] > 0 for item in result["before"]])
    assert after_has >= 0.8 and before_has <= 0.2
    html = (tmp_path / "s.html").read_text()
    assert "After the edit" in html and "http://" not in html and "https://" not in html
    assert "Neighbours after the edit" in r.stdout


def test_search_input_errors(cli, tmp_path):
    store, _ = _setup(tmp_path)
    base = [
        "search",
        "--gallery",
        store.path,
        "--sae",
        tmp_path / "sae",
        "--bank",
        tmp_path / "bank.yaml",
    ]
    assert_one_line_error(cli(*base, "--row", 1, "--set", "atm5=1"), 2, "did you mean")
    assert_one_line_error(cli(*base, "--row", 99999), 2, "out of range")
    assert_one_line_error(cli(*base), 2, "exactly one query")
    assert_one_line_error(cli(*base, "--row", 1, "--text", "x"), 2, "exactly one query")
    assert_one_line_error(cli(*base, "--row", 1, "--set", "atom5"), 2, "NAME=VALUE")
    other = np.zeros((10, 8), dtype=np.float32)
    np.save(tmp_path / "other.npy", other)
    assert_one_line_error(
        cli(
            "search",
            "--gallery",
            tmp_path / "other.npy",
            "--sae",
            tmp_path / "sae",
            "--bank",
            tmp_path / "bank.yaml",
            "--row",
            1,
        ),
        2,
        "dimension",
    )


def test_a_plain_npy_gallery_takes_its_row_names_from_labels(cli, tmp_path):
    store, _ = _setup(tmp_path)
    np.save(tmp_path / "gallery.npy", store.read())
    ids = [f"img-{i:04d}" for i in range(store.count)]
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(ids) + "\n")
    r = cli(
        "search", "--gallery", tmp_path / "gallery.npy", "--labels", tmp_path / "ids.csv",
        "--sae", tmp_path / "sae", "--bank", tmp_path / "bank.yaml", "--row", 3, "--top", 5,
        "--json", tmp_path / "s.json",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    after = json.loads((tmp_path / "s.json").read_text())["after"]
    assert [item["id"] for item in after] == [ids[item["row"]] for item in after]
    (tmp_path / "short.csv").write_text("id\nonly-one\n")
    short = cli(
        "search", "--gallery", tmp_path / "gallery.npy", "--labels", tmp_path / "short.csv",
        "--sae", tmp_path / "sae", "--bank", tmp_path / "bank.yaml", "--row", 3,
    )  # fmt: skip
    assert_one_line_error(short, 2, "has 1 rows but the embeddings have")
