"""CelebA readers: three layouts, the same table, and errors that show the expected tree."""

from __future__ import annotations

import pandas as pd
import pytest

from audit.data.celeba import N_ATTRIBUTES, read_celeba, write_fake_celeba
from audit.errors import InputError


@pytest.mark.parametrize("layout", ["official", "torchvision", "kaggle"])
def test_layouts_read_to_the_same_table(tmp_path, layout):
    root = write_fake_celeba(tmp_path / layout, n_images=25, layout=layout, seed=3)
    data = read_celeba(root)
    reference = read_celeba(
        write_fake_celeba(tmp_path / "ref", n_images=25, layout="official", seed=3)
    )
    assert data.layout == layout
    assert len(data) == 25 and len(data.attributes) == N_ATTRIBUTES
    assert set(data.table["split"]) <= {"train", "valid", "test"}
    cols = ["id", *reference.attributes, "partition", "split"]
    pd.testing.assert_frame_equal(data.table[cols], reference.table[cols])
    assert data.table["Male"].isin([0, 1]).all()
    assert all(p.endswith(i) for p, i in zip(data.table["path"], data.table["id"], strict=True))


def test_golden_parse(tmp_path):
    root = tmp_path / "r"
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"A{i}" for i in range(N_ATTRIBUTES)]
    rows = [
        "2",
        " ".join(names),
        "000001.jpg " + " ".join(["1"] + ["-1"] * 39),
        "000002.jpg " + " ".join(["-1"] * 39 + ["1"]),
    ]
    (root / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    data = read_celeba(root, require_images=False)
    assert list(data.table["A0"]) == [1, 0] and list(data.table["A39"]) == [0, 1]
    assert list(data.table["split"]) == ["train", "test"]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: (r / "list_eval_partition.txt").unlink(), "list_eval_partition.txt is missing"),
        (lambda r: (r / "list_attr_celeba.txt").unlink(), "no CelebA attribute file"),
        (lambda r: (r / "list_attr_celeba.txt").write_text("abc\n"), "image count"),
        (lambda r: (r / "list_attr_celeba.txt").write_text("1\nA B C\n"), "40 attributes"),
        (
            lambda r: (r / "list_attr_celeba.txt").write_text(
                (r / "list_attr_celeba.txt").read_text().replace(" 1", " 7", 1)
            ),
            "-1 or 1",
        ),
        (
            lambda r: (r / "list_attr_celeba.txt").write_text(
                "99\n" + (r / "list_attr_celeba.txt").read_text().split("\n", 1)[1]
            ),
            "announces 99",
        ),
        (
            lambda r: (r / "list_eval_partition.txt").write_text("000001.jpg 5\n"),
            "partition values",
        ),
        (lambda r: __import__("shutil").rmtree(r / "img_align_celeba"), "images folder not found"),
        (
            lambda r: (r / "list_eval_partition.txt").write_text(
                "000001.jpg 0\n000001.jpg 1\n000002.jpg 0\n000003.jpg 0\n000004.jpg 0\n"
            ),
            "000001.jpg is listed more than once",
        ),
        (
            lambda r: (r / "list_attr_celeba.txt").write_text(
                (r / "list_attr_celeba.txt").read_text().replace("000002.jpg", "000001.jpg")
            ),
            "000001.jpg is listed more than once",
        ),
    ],
)
def test_broken_trees_raise_with_the_expected_tree(tmp_path, damage, message):
    root = write_fake_celeba(tmp_path / "c", n_images=5)
    damage(root)
    with pytest.raises(InputError, match=message) as info:
        read_celeba(root)
    assert "list_attr_celeba.txt" in info.value.details and "img_align_celeba" in info.value.details


def test_missing_root(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        read_celeba(tmp_path / "nope")
    assert "torchvision" in info.value.details
