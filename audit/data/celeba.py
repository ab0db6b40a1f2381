"""CelebA readers: the official layout, torchvision's and Kaggle's CSV variant.

Nothing is ever downloaded. The result is one row per image with its path, the 40 binary
attributes (0/1) and the official split; a missing or malformed file raises an
:class:`~audit.errors.InputError` whose details show the expected folder tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError, first_line

N_ATTRIBUTES = 40
SPLITS = {0: "train", 1: "valid", 2: "test"}

EXPECTED_TREE = """expected one of these layouts (nothing is downloaded):
  official                     torchvision                    Kaggle (CSV)
  ROOT/                        ROOT/                          ROOT/
  ├── img_align_celeba/        └── celeba/                    ├── img_align_celeba/
  │   ├── 000001.jpg               ├── img_align_celeba/      │   └── img_align_celeba/
  │   └── ...                      ├── list_attr_celeba.txt   │       └── 000001.jpg ...
  ├── list_attr_celeba.txt         └── list_eval_partition.txt├── list_attr_celeba.csv
  └── list_eval_partition.txt                                 └── list_eval_partition.csv
list_attr_celeba.txt: a count line, a line of 40 attribute names, then `000001.jpg  -1 1 ...`;
list_eval_partition.txt: `000001.jpg 0` (0 train, 1 valid, 2 test)."""


@dataclass(frozen=True)
class CelebA:
    root: Path
    layout: str  # "official" | "torchvision" | "kaggle"
    images_dir: Path
    table: pd.DataFrame  # id, path, the 40 attributes as 0/1, partition (0/1/2), split

    @property
    def attributes(self) -> list[str]:
        return [c for c in self.table.columns if c not in ("id", "path", "partition", "split")]

    def __len__(self) -> int:
        return len(self.table)


def _missing(message: str) -> InputError:
    return InputError(message, details=EXPECTED_TREE)


def find_layout(root: str | os.PathLike[str]) -> tuple[str, Path, Path, Path]:
    """``(layout, attributes file, partition file, images folder)`` for a CelebA root."""
    r = Path(root)
    if not r.exists():
        raise _missing(f"CelebA root not found: {r}")
    if not r.is_dir():
        raise _missing(f"CelebA root is not a folder: {r}")
    candidates = [
        (
            "official",
            r / "list_attr_celeba.txt",
            r / "list_eval_partition.txt",
            r / "img_align_celeba",
        ),
        (
            "torchvision",
            r / "celeba" / "list_attr_celeba.txt",
            r / "celeba" / "list_eval_partition.txt",
            r / "celeba" / "img_align_celeba",
        ),
        (
            "kaggle",
            r / "list_attr_celeba.csv",
            r / "list_eval_partition.csv",
            r / "img_align_celeba",
        ),
    ]
    for layout, attrs, parts, images in candidates:
        if attrs.exists():
            if not parts.exists():
                raise _missing(f"CelebA ({layout} layout): {parts} is missing")
            # Archives often unpack to img_align_celeba/img_align_celeba/.
            if (images / "img_align_celeba").is_dir():
                images = images / "img_align_celeba"
            return layout, attrs, parts, images
    raise _missing(f"no CelebA attribute file (list_attr_celeba.txt or .csv) under {r}")


def read_celeba(root: str | os.PathLike[str], require_images: bool = True) -> CelebA:
    """Read a CelebA folder (any supported layout) into one table, row order as in the files."""
    layout, attrs_path, parts_path, images = find_layout(root)
    if layout == "kaggle":
        attrs = _read_attr_csv(attrs_path)
        parts = _read_partition_csv(parts_path)
    else:
        attrs = _read_attr_txt(attrs_path)
        parts = _read_partition_txt(parts_path)
    for frame, source in ((attrs, attrs_path), (parts, parts_path)):
        duplicated = frame["id"].astype(str).duplicated()
        if duplicated.any():
            first = frame["id"].astype(str)[duplicated].iloc[0]
            raise _missing(f"{source}: image {first} is listed more than once")
    if len(parts) != len(attrs) or not np.array_equal(
        parts["id"].to_numpy(), attrs["id"].to_numpy()
    ):
        merged = attrs.merge(parts, on="id", how="left", validate="one_to_one")
        if merged["partition"].isna().any():
            first = merged.loc[merged["partition"].isna(), "id"].iloc[0]
            raise _missing(f"{parts_path}: no split for image {first}")
        table = merged
    else:
        table = attrs.assign(partition=parts["partition"].to_numpy())
    table["partition"] = table["partition"].astype(int)
    table["split"] = table["partition"].map(SPLITS)
    if require_images and not images.is_dir():
        raise _missing(f"CelebA images folder not found: {images}")
    # Absolute paths: a store resolves a relative path against its own folder, so one relative
    # to the working directory (--root celeba) would point nowhere once written there.
    images = images.resolve()
    table.insert(1, "path", [str(images / name) for name in table["id"]])
    if require_images:
        first = Path(table["path"].iloc[0]) if len(table) else None
        if first is not None and not first.exists():
            raise _missing(f"CelebA image {first} listed in {attrs_path} is missing")
    return CelebA(Path(root).resolve(), layout, images, table.reset_index(drop=True))


def _read_attr_txt(path: Path) -> pd.DataFrame:
    try:
        with open(path, encoding="utf-8") as fh:
            count_line = fh.readline().strip()
            header = fh.readline().split()
    except UnicodeDecodeError as exc:
        raise _missing(f"{path}: not UTF-8 text") from exc
    try:
        count = int(count_line)
    except ValueError as exc:
        raise _missing(
            f"{path}: line 1 should be the image count, got {count_line[:40]!r}"
        ) from exc
    if len(header) != N_ATTRIBUTES:
        raise _missing(f"{path}: line 2 should name {N_ATTRIBUTES} attributes, found {len(header)}")
    try:
        frame = pd.read_csv(
            path,
            sep=r"\s+",
            skiprows=2,
            header=None,
            names=["id", *header],
            dtype={"id": str},
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise _missing(f"{path}: malformed attribute rows ({first_line(exc, limit=None)})") from exc
    if len(frame) != count:
        raise _missing(f"{path}: line 1 announces {count} images but {len(frame)} rows follow")
    return _binarise(frame, header, path)


def _read_attr_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise _missing(f"{path}: malformed CSV ({first_line(exc, limit=None)})") from exc
    if "image_id" not in frame.columns or frame.shape[1] != N_ATTRIBUTES + 1:
        raise _missing(
            f"{path}: expected columns image_id + {N_ATTRIBUTES} attributes, got {frame.shape[1]}"
        )
    frame = frame.rename(columns={"image_id": "id"})
    return _binarise(frame, [c for c in frame.columns if c != "id"], path)


def _binarise(frame: pd.DataFrame, names: list[str], path: Path) -> pd.DataFrame:
    values = frame[names]
    if values.isna().any().any():
        row = int(values.isna().any(axis=1).to_numpy().argmax())
        raise _missing(
            f"{path}: image {frame['id'].iloc[row]} has {values.iloc[row].isna().sum()} missing values"
        )
    numeric = values.to_numpy()
    if not np.isin(numeric, (-1, 1)).all():
        row = int((~np.isin(numeric, (-1, 1))).any(axis=1).argmax())
        raise _missing(f"{path}: attribute values must be -1 or 1 (image {frame['id'].iloc[row]})")
    out = pd.DataFrame({"id": frame["id"].astype(str).to_numpy()})
    for name in names:
        out[name] = (frame[name].to_numpy() == 1).astype(np.int8)
    return out


def _read_partition_txt(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path, sep=r"\s+", header=None, names=["id", "partition"], dtype={"id": str}
        )
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise _missing(f"{path}: malformed partition file ({first_line(exc, limit=None)})") from exc
    return _check_partition(frame, path)


def _read_partition_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"image_id": str})
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise _missing(f"{path}: malformed CSV ({first_line(exc, limit=None)})") from exc
    if list(frame.columns) != ["image_id", "partition"]:
        raise _missing(f"{path}: expected columns image_id,partition")
    return _check_partition(frame.rename(columns={"image_id": "id"}), path)


def _check_partition(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if frame["partition"].isna().any() or not frame["partition"].isin([0, 1, 2]).all():
        raise _missing(f"{path}: partition values must be 0, 1 or 2")
    return frame


def write_fake_celeba(
    root: str | os.PathLike[str],
    n_images: int = 30,
    layout: str = "official",
    seed: int = 0,
    image_size: int = 8,
) -> Path:
    """Write a tiny CelebA-shaped folder (random attributes, solid-colour images) for tests."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = [f"Attr_{i:02d}" for i in range(N_ATTRIBUTES - 2)] + ["Blond_Hair", "Male"]
    values = rng.choice([-1, 1], size=(n_images, N_ATTRIBUTES))
    ids = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    partition = rng.choice([0, 1, 2], size=n_images, p=[0.6, 0.2, 0.2])
    r = Path(root)
    base = r / "celeba" if layout == "torchvision" else r
    images = base / "img_align_celeba"
    if layout == "kaggle":
        images = images / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(ids):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (image_size, image_size), colour).save(images / name)
        del i
    if layout == "kaggle":
        pd.DataFrame({"image_id": ids, **{n: values[:, j] for j, n in enumerate(names)}}).to_csv(
            base / "list_attr_celeba.csv", index=False
        )
        pd.DataFrame({"image_id": ids, "partition": partition}).to_csv(
            base / "list_eval_partition.csv", index=False
        )
    else:
        lines = [str(n_images), " ".join(names)]
        lines += [
            f"{name} " + " ".join(f"{v:2d}" for v in row)
            for name, row in zip(ids, values, strict=True)
        ]
        (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (base / "list_eval_partition.txt").write_text(
            "\n".join(f"{name} {p}" for name, p in zip(ids, partition, strict=True)) + "\n",
            encoding="utf-8",
        )
    return r
