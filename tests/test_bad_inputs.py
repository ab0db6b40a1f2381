"""The bad-input matrix: every row of the table in docs/robustness.md is one case here.

Each case builds a broken input, runs the command line in-process (or, for the file-size-limit
row, as ``python -m audit`` in a child process) and checks what the user sees: the exit code, a
one-line ``error:`` message containing the documented words, no traceback, and for some rows
what must *not* have happened (a payload that ran, a partial file under the final name).

``python -m tests.test_bad_inputs`` prints the table, ``--update-docs`` rewrites it in
docs/robustness.md; ``test_docs_matrix_is_the_cases`` fails when the two drift apart.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "robustness.md"
BEGIN, END = "<!-- bad-input-matrix:begin -->", "<!-- bad-input-matrix:end -->"


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad input, as docs/robustness.md describes it
    command: str  # the command it is given to
    shows: str  # words the user sees (asserted case-insensitively in the output)
    code: int  # exit code
    build: Callable[[Ctx], list]  # the command-line arguments
    after: Callable[[Ctx], None] | None = None  # extra assertions (nothing ran, nothing partial)
    details: bool = False  # the message is followed by multi-line details (the CelebA tree)
    child: bool = False  # run as `python -m audit` in a child process, with:
    file_limit: int | None = None  # RLIMIT_FSIZE (bytes): larger writes fail with EFBIG
    child_env: tuple[tuple[str, str], ...] = ()
    readme: str | None = None  # "what the user sees" in the docs when it is not an error line


@dataclass
class Ctx:
    """What a case may use: the shared world (read-only!) and a private folder."""

    world: dict[str, Path]
    clip: list[str]
    celeba: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    rlimit_fsize: int | None = None
    notes: dict = field(default_factory=dict)

    @property
    def marker(self) -> Path:
        return self.tmp / "payload-ran"

    def copy(self, key: str) -> Path:
        src = self.world[key]
        dst = self.tmp / f"copy-{src.name}"
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst

    def embeddings(self) -> np.ndarray:
        return np.load(self.world["store"] / "embeddings.npy")

    def labels(self) -> pd.DataFrame:
        return pd.read_csv(self.world["labels"])

    def npy(self, name: str, array: np.ndarray) -> Path:
        path = self.tmp / name
        np.save(path, array)
        return path

    def text(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def bank_with(self, edit: Callable[[dict], None]) -> Path:
        data = yaml.safe_load(self.world["bank"].read_text(encoding="utf-8"))
        edit(data)
        return self.text("bank.yaml", yaml.safe_dump(data, allow_unicode=True))

    def sae_config_with(self, edit: Callable[[dict], None]) -> Path:
        sae = self.copy("sae")
        config = json.loads((sae / "config.json").read_text())
        edit(config)
        (sae / "config.json").write_text(json.dumps(config))
        return sae


def _bank_with_word_file(c: Ctx, content: bytes, recorded: bytes | None = None) -> Path:
    """The world's bank naming a word file beside it that holds ``content`` (its record: the
    sha256 of ``recorded``, by default of ``content``)."""
    import hashlib

    (c.tmp / "bank.words.safetensors").write_bytes(content)
    digest = hashlib.sha256(content if recorded is None else recorded).hexdigest()
    record = {"file": "bank.words.safetensors", "sha256": f"sha256:{digest}",
              "words": [{"word": "red", "threshold": 0.0}]}  # fmt: skip
    return c.bank_with(lambda d: d.update(word_checks=record))


# ------------------------------------------------------------------------------------------
# Argument builders
# ------------------------------------------------------------------------------------------


def audit(ctx: Ctx, *extra: object, **over: object) -> list:
    w = ctx.world
    args = {
        "--embeddings": w["store"], "--target": "Male", "--spurious": "Blond_Hair",
        "--sae": w["sae"], "--bank": w["bank"], "--classifier": w["head"],
        "--json": ctx.tmp / "out" / "a.json", "--html": ctx.tmp / "out" / "a.html",
        "--junit": ctx.tmp / "out" / "a.xml",
    }  # fmt: skip
    args.update({f"--{k.replace('_', '-')}": v for k, v in over.items()})
    flat = [x for pair in args.items() for x in pair if pair[1] is not None]
    return ["audit", *flat, "-q", *extra]


def with_rows(ctx: Ctx, x: np.ndarray, labels: pd.DataFrame) -> dict:
    """``--embeddings`` / ``--labels`` overrides for a modified copy of the world's data."""
    labels_path = ctx.tmp / "labels-mod.csv"
    labels.to_csv(labels_path, index=False)
    return {"embeddings": ctx.npy("emb-mod.npy", x.astype(np.float32)), "labels": labels_path}


def evaluate(ctx: Ctx, embeddings: Path | None = None, sae: Path | None = None) -> list:
    return [
        "eval", "--sae", sae or ctx.world["sae"], "--embeddings", embeddings or ctx.world["store"],
        "--device", "cpu", "-q", "--no-progressive", "--cknna-samples", "64",
    ]  # fmt: skip


def train(ctx: Ctx, embeddings: Path, *extra: object) -> list:
    return [
        "train", "--embeddings", embeddings, "--out", ctx.tmp / "sae-out", "--n-latents", "64",
        "--k-min", "8", "--epochs", "1", "--batch-size", "256", "--device", "cpu", "-q", *extra,
    ]  # fmt: skip


def concepts(ctx: Ctx, vocab: Path | str, text_embeddings: Path | None = None, **kw) -> list:
    vocab_path = vocab
    if text_embeddings is None:
        text_embeddings = ctx.npy("text.npy", _text_embeddings(ctx, 3))
    out = ["--name", kw["name"]] if "name" in kw else ["--out", ctx.tmp / "bank-out.yaml"]
    probe = ["--probe-images", kw["probe"]] if "probe" in kw else []
    return [
        "concepts", "--sae", ctx.world["sae"], "--vocab", vocab_path,
        "--text-embeddings", text_embeddings, *out, *probe,
    ]  # fmt: skip


def _text_embeddings(ctx: Ctx, rows: int) -> np.ndarray:
    return ctx.embeddings()[:rows].copy()


def vocab(ctx: Ctx, content: str | bytes = "red\nblue\ngreen\n") -> Path:
    return ctx.text("vocab.txt", content)


def celeba(ctx: Ctx, root: Path, *extra: object) -> list:
    w = ctx.world
    return [
        "celeba", "--root", root, "--sae", w["sae"], "--bank", w["bank"], "--classifier", "probe",
        "--embeddings", w["store"], "-q", "--json", ctx.tmp / "c.json", *extra,
    ]  # fmt: skip


def broken_celeba(ctx: Ctx, damage: Callable[[Path], object]) -> Path:
    root = ctx.tmp / "celeba"
    shutil.copytree(ctx.celeba, root)
    damage(root)
    return root


def _attr_lines(root: Path) -> list[str]:
    return (root / "list_attr_celeba.txt").read_text().splitlines()


def _write_attr(root: Path, lines: list[str]) -> None:
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def check(ctx: Ctx, results: Path, gate: Path | None = None, *extra: object) -> list:
    gate = gate or ctx.text("gate.yaml", "gates:\n  accuracy: {min: 0.5}\n")
    return ["check", "--config", gate, results, *extra]


def saved_results(ctx: Ctx) -> Path:
    """A real audit JSON (written once per module by the ``world`` fixture)."""
    return ctx.world["results"]


def gate(ctx: Ctx, text: str | bytes, **over: object) -> list:
    return audit(ctx, "--gate", ctx.text("gate.yaml", text), **over)


def payload_did_not_run(ctx: Ctx) -> None:
    assert not ctx.marker.exists(), "the pickled payload ran"


def no_report(ctx: Ctx) -> None:
    assert not (ctx.tmp / "out" / "a.json").exists()


def search_json_not_written(ctx: Ctx) -> None:
    assert not (ctx.tmp / "s.json").exists()


def checks_skipped(reason: str) -> Callable[[Ctx], None]:
    def after(ctx: Ctx) -> None:
        result = json.loads((ctx.tmp / "out" / "a.json").read_text())
        from audit.fairness.gate import GROUP_CHECKS

        for entry in result["checks"]:
            if entry["name"] in GROUP_CHECKS:
                assert entry["status"] == "skipped" and reason in entry["reason"], entry

    return after


# --- outputs ------------------------------------------------------------------------------


class _DiskFullFile:
    """A file whose ``write`` stores a few bytes and then fails like a full disk."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data):
        self.handle.write(data[:16])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def disk_full(ctx: Ctx, name: str) -> Path:
    """Every atomic text write fails with ENOSPC; ``name`` (returned) holds an earlier version."""
    import audit.fileio

    target = ctx.tmp / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("previous version\n", encoding="utf-8")
    ctx.notes["target"] = target

    def full_disk_open(*args, **kwargs):
        return _DiskFullFile(builtins.open(*args, **kwargs))

    ctx.monkeypatch.setattr(audit.fileio, "open", full_disk_open, raising=False)
    return target


def previous_version_survives(ctx: Ctx) -> None:
    target: Path = ctx.notes["target"]
    assert target.read_text(encoding="utf-8") == "previous version\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp files


def read_only_folder(ctx: Ctx) -> Path:
    """A folder the process cannot write: chmod 0o555, and as root (where chmod does not stop
    writes) the same refusal simulated where the atomic writer creates its temporary file."""
    import tempfile

    import audit.fileio

    folder = ctx.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    ctx.notes["read_only"] = folder
    if os.access(folder, os.W_OK):  # root: simulate what the kernel does for everyone else
        real = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if Path(kwargs.get("dir", ".")).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return real(*args, **kwargs)

        ctx.monkeypatch.setattr(audit.fileio.tempfile, "mkstemp", mkstemp)
    return folder


def read_only_left_empty(ctx: Ctx) -> None:
    folder = ctx.notes["read_only"]
    assert list(folder.iterdir()) == []
    folder.chmod(0o755)


def foreign_files(ctx: Ctx, folder: str, *names: str) -> Path:
    """``folder`` holding the user's own files with names msae-audit writes (not its output)."""
    out = ctx.tmp / folder
    out.mkdir()
    for name in names:
        (out / name).write_bytes(f"the user's own {name}".encode())
    ctx.notes["foreign"] = [out / name for name in names]
    return out


def train_into_foreign_folder(ctx: Ctx) -> list:
    foreign_files(ctx, "sae-out", "config.json", "training.json")  # train()'s --out
    return train(ctx, ctx.world["store"], "--overwrite")


def foreign_files_kept(ctx: Ctx) -> None:
    for path in ctx.notes["foreign"]:
        assert path.read_bytes() == f"the user's own {path.name}".encode(), path


def sae_weights_not_published(ctx: Ctx) -> None:
    out = ctx.tmp / "sae-out"
    assert not (out / "sae.safetensors").exists()
    assert not [p for p in out.glob(".*.tmp")], "temporary files left behind"


# --- hostile files --------------------------------------------------------------------------


def evil_reference_pt(ctx: Ctx) -> Path:
    from tests.hostile_files import torch_pickle

    return torch_pickle(ctx.tmp / "6144_768_TopKReLU_64_UW_False_False_0.0_cc3m.pt", ctx.marker)


def reference_pt(ctx: Ctx, damage: str) -> Path:
    """A reference-code .pt for the world's embeddings, damaged: ``string-bias`` (latent_bias
    is a string) or ``truncated`` (the zip cut after 1000 bytes: torch's zip reader fails, where
    cuts near the end fail as an OSError)."""
    import torch

    n = 64
    state = {
        "encoder": torch.zeros(D, n),
        "latent_bias": torch.zeros(n),
        "pre_bias": torch.zeros(D),
    }
    if damage == "string-bias":
        state["latent_bias"] = "abc"
    path = ctx.tmp / f"{n}_{D}_TopKReLU_8_UW_False_False_0.0_x.pt"
    torch.save({"model": state, "scaling_factor": 1.0}, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    return path


def evil_classifier(ctx: Ctx) -> Path:
    from tests.hostile_files import torch_pickle

    return torch_pickle(ctx.tmp / "head.pt", ctx.marker, key="weight")


def evil_pretrained(ctx: Ctx) -> Path:
    from tests.hostile_files import typeerror_then_code_pickle

    ctx.monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6 behaviour
    return typeerror_then_code_pickle(ctx.tmp / "weights.pt", ctx.marker)


def evil_local_dir(ctx: Ctx) -> Path:
    """An open_clip ``local-dir:`` folder: the CLIP's config and a pickle whose payload runs
    if open_clip's retry without ``weights_only`` ever unpickles it."""
    from tests.hostile_files import typeerror_then_code_pickle

    ctx.monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6 behaviour
    folder = ctx.tmp / "clip-dir"
    folder.mkdir()
    model_cfg = json.loads(Path(ctx.clip[ctx.clip.index("--model") + 1]).read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    typeerror_then_code_pickle(folder / "open_clip_pytorch_model.bin", ctx.marker)
    return folder


def scripted_classifier(ctx: Ctx, kind: str) -> Path:
    """A TorchScript classifier on embeddings that goes wrong at run time: ``image`` reads
    ``[B, 3, H, W]`` images (given embeddings it raises), ``nan`` returns NaN scores,
    ``short`` returns one score fewer than the batch has rows."""
    import torch

    class Image(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))[:, 0]

    class NaN(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0] * float("nan")

    class Short(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[1:, :2]

    module = {"image": Image, "nan": NaN, "short": Short}[kind]()
    path = ctx.tmp / f"{kind}.pt"
    torch.jit.script(module).save(str(path))
    return path


def evil_npy(ctx: Ctx) -> Path:
    from tests.hostile_files import pickled_npy

    return pickled_npy(ctx.tmp / "evil.npy", ctx.marker)


def evil_npz(ctx: Ctx) -> Path:
    from tests.hostile_files import pickled_npz

    return pickled_npz(ctx.tmp / "head.npz", ctx.marker)


def python_tag(ctx: Ctx) -> str:
    return f"!!python/object/apply:os.system ['touch {ctx.marker}']"


def interrupted_checkpoint(ctx: Ctx, arch_flags: list[str]) -> list:
    """A Matryoshka run interrupted after one step (its checkpoint on disk), resumed with
    another architecture's flags."""
    from audit.sae import SAEConfig, matryoshka_k_list
    from audit.sae.train import TrainConfig, train_sae
    from audit.store import open_store

    cfg = SAEConfig(arch="matryoshka", d_in=D, n_latents=64, k_list=matryoshka_k_list(64, 8))
    train_sae(
        open_store(ctx.world["store"]), cfg,
        TrainConfig(epochs=1, batch_size=256, device="cpu"), ctx.tmp / "sae-out", stop_after=1,
    )  # fmt: skip
    assert (ctx.tmp / "sae-out" / "checkpoint.safetensors").exists()
    return [*train(ctx, ctx.world["store"]), "--resume", *arch_flags]


def _evil_image(ctx: Ctx) -> Path:
    from PIL import Image

    folder = ctx.tmp / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "a_good.png")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def _plain_npy_folder(ctx: Ctx) -> Path:
    folder = ctx.tmp / "work"
    folder.mkdir()
    np.save(folder / "embeddings.npy", ctx.embeddings()[:5])
    return folder


def _plain_npy_kept(ctx: Ctx) -> None:
    np.testing.assert_array_equal(
        np.load(ctx.tmp / "work" / "embeddings.npy"), ctx.embeddings()[:5]
    )


def _left_out_folder(ctx: Ctx) -> Path:
    """Two images, a link to a deleted image and a photo of a type that is not read."""
    folder = _odd_image(ctx, "b_good.png")
    (folder / "gone.png").symlink_to(ctx.tmp / "deleted.png")
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    return folder


def _odd_image(ctx: Ctx, name: str) -> Path:
    """A good image and ``name``: a float TIFF for .tif names, else an ordinary PNG."""
    from PIL import Image

    folder = ctx.tmp / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "a_good.png")
    if name.endswith(".tif"):
        Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(folder / name)
    else:
        Image.new("RGB", (16, 16), (10, 200, 10)).save(folder / name)
    return folder


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------

D = 48  # the planted world's embedding dimension

CASES: list[Case] = [
    # --- embeddings ---------------------------------------------------------------------
    Case("dim-mismatch", "embeddings of dimension 16 for an SAE trained on 48", "eval",
         "have dimension 16 but the SAE", 2,
         lambda c: evaluate(c, c.npy("d16.npy", np.ones((20, 16), np.float32)))),
    Case("nan-embeddings", "a NaN in the embeddings", "audit",
         "row 5 contains NaN or inf", 2,
         lambda c: audit(c, **with_rows(c, _poke(c.embeddings(), 5, np.nan), c.labels())),
         after=no_report),
    Case("inf-embeddings", "an infinite value in the embeddings", "train",
         "row 3 contains NaN or inf", 2,
         lambda c: train(c, c.npy("inf.npy", _poke(c.embeddings(), 3, np.inf)))),
    Case("empty-npy", "an empty (0-byte) .npy file", "eval",
         "empty file, not a .npy array", 2,
         lambda c: evaluate(c, c.text("empty.npy", b""))),
    Case("truncated-npy", "a truncated .npy file", "eval",
         "truncated .npy file", 2,
         lambda c: evaluate(c, _truncated(c.npy("t.npy", c.embeddings())))),
    Case("text-as-npy", "a CSV file named .npy", "audit",
         "not a .npy file (no NumPy header)", 2,
         lambda c: audit(c, embeddings=c.text("x.npy", "1,2,3\n"), labels=c.world["labels"])),
    Case("pickled-npy", "a .npy holding pickled Python objects", "eval",
         "not a plain numeric .npy array", 2,
         lambda c: evaluate(c, evil_npy(c)), after=payload_did_not_run),
    Case("integer-npy", "integer embeddings", "eval",
         "dtype int64 is not supported", 2,
         lambda c: evaluate(c, c.npy("i.npy", np.ones((10, D), np.int64)))),
    Case("empty-store", "a store with 0 rows", "train",
         "no embeddings to train on", 2,
         lambda c: train(c, c.npy("zero.npy", np.zeros((0, D), np.float32)))),
    Case("store-no-manifest", "a store folder without manifest.json", "eval",
         "manifest.json is missing", 2,
         lambda c: evaluate(c, _drop(c.copy("store"), "manifest.json"))),
    Case("store-bad-manifest", "a manifest.json that is not JSON", "eval",
         "is not valid JSON", 2,
         lambda c: evaluate(c, _write(c.copy("store"), "manifest.json", "{not json"))),
    Case("store-count-mismatch", "a manifest whose row count disagrees with its shards", "eval",
         "but the manifest says count=", 2,
         lambda c: evaluate(c, _manifest(c.copy("store"), count=5))),
    Case("store-shard-escape", "a manifest listing a shard outside the store (../x.npy)", "eval",
         "invalid shard name '../x.npy'", 2,
         lambda c: evaluate(c, _manifest(c.copy("store"), shards=["../x.npy"]))),
    Case("store-shard-rows", "a manifest entry whose row count disagrees with its shard", "eval",
         "rows but the manifest says 3", 2,
         lambda c: evaluate(c, _manifest(c.copy("store"), shards=[
             {"file": "embeddings.npy", "rows": 3}]))),
    Case("store-shard-altered", "a shard whose bytes changed after it was written (same rows)",
         "eval", "do not match the sha256 its manifest records", 2,
         lambda c: evaluate(c, _alter_shard(c.copy("store")))),
    # --- labels ---------------------------------------------------------------------------
    Case("labels-row-mismatch", "a labels CSV with fewer rows than the embeddings", "audit",
         "has 10 rows but the embeddings have", 2,
         lambda c: audit(c, labels=_csv(c, c.labels().iloc[:10]))),
    Case("labels-other-ids", "a labels CSV whose id column names other images than the store",
         "audit", "labels are matched to the store by their 'id' column", 2,
         lambda c: audit(c, labels=_csv(c, c.labels().assign(id=lambda f: f["id"].astype(str)
                                                               + "-other")))),
    Case("labels-other-paths", "a labels CSV whose path column names other images than the "
         "store", "audit", "column 'path' names other images than the store's metadata.csv", 2,
         lambda c: audit(c, **_other_paths(c)), after=no_report),
    Case("labels-parquet-damaged", "a truncated Parquet labels table", "audit",
         "malformed Parquet file", 2,
         lambda c: audit(c, labels=c.text("l.parquet", b"PAR1\x15\x04\x15\x00"))),
    Case("labels-empty-file", "an empty labels CSV", "audit",
         "empty CSV file", 2,
         lambda c: audit(c, labels=c.text("l.csv", b""))),
    Case("labels-not-utf8", "a Latin-1 labels CSV", "audit",
         "not UTF-8 text", 2,
         lambda c: audit(c, labels=c.text("l.csv", _latin1_labels(c)))),
    Case("labels-missing-column", "--target names a column that does not exist", "audit",
         "--target column 'Gender' not found; available columns: id, Male, Blond_Hair", 2,
         lambda c: audit(c, target="Gender")),
    Case("labels-missing-values", "a target column with empty cells", "audit",
         "column 'Male' has 3 missing values", 2,
         lambda c: audit(c, labels=_csv(c, _blank(c.labels(), "Male", 3)))),
    Case("single-class-target", "a target with a single class", "audit",
         "--target 'Male' must have exactly two values, found 1", 2,
         lambda c: audit(c, labels=_csv(c, c.labels().assign(Male=1)))),
    Case("class-names-malformed", "--class-names without a NAME (Male=1)", "audit",
         "--class-names entries are COLUMN=VALUE:NAME (e.g. is_circle=1:circle), got 'Male=1'",
         2, lambda c: audit(c, class_names="Male=1"), after=no_report),
    Case("class-names-unknown", "--class-names for a value no group has (a typo: Mael=1)",
         "audit", "--class-names names Mael=1, which no group has; the groups' values are "
         "Male=0, Male=1, Blond_Hair=0, Blond_Hair=1", 2,
         lambda c: audit(c, class_names="Mael=1:man,Male=0:woman"), after=no_report),
    Case("single-value-attribute", "an attribute with a single value", "audit",
         "--spurious 'Blond_Hair' has a single value", 2,
         lambda c: audit(c, labels=_csv(c, c.labels().assign(Blond_Hair=0)))),
    Case("non-utf8-file-name", "a store folder whose name is not UTF-8 (caf\\xe9)", "audit",
         "", 0,
         lambda c: audit(c, embeddings=_non_utf8_copy(c, "store"), labels=c.world["labels"]),
         after=lambda c: _json_has(c, "caf\ufffd"),
         readme="reports written; the undecodable byte shows as U+FFFD"),
    Case("non-utf8-output-name", "an output file name that is not UTF-8, stdout strict UTF-8",
         "concepts", "", 0,
         lambda c: [*concepts(c, vocab(c))[:-2], "--out", os.fsdecode(bytes(c.tmp) + b"/caf\xe9.yaml")],
         child=True, child_env=(("PYTHONIOENCODING", "utf-8"),),
         after=lambda c: _named_in_output(c, "caf\\udce9.yaml"),
         readme="the bank is written; the name prints as `caf\\udce9.yaml`"),
    Case("non-utf8-missing-file", "a missing file whose name is not UTF-8", "eval",
         "SAE not found:", 2,
         lambda c: evaluate(c, sae=Path(os.fsdecode(bytes(c.tmp) + b"/caf\xe9")))),
    Case("empty-group", "no rows in one target x attribute cell (no blond men)", "audit",
         "every gated check was skipped", 1,
         lambda c: gate(c, "gates:\n  worst_group_accuracy: {min: 0.99}\n", **_no_blond_men(c)),
         after=checks_skipped("has no rows"),
         readme="`INCONCLUSIVE` verdict: the group checks are `skipped` (never passed), reports "
                "written"),
    Case("groups-below-min-size", "groups smaller than the gate's min_group_size", "audit",
         "every gated check was skipped", 1,
         lambda c: gate(c, "gates:\n  worst_group_accuracy: {min: 0.99}\nmin_group_size: 100000\n"),
         after=checks_skipped("< min_group_size=100000"),
         readme="`INCONCLUSIVE` verdict: the group checks are `skipped` (never passed), reports "
                "written (exit 0 with `allow_skipped: true`)"),
    # --- models ---------------------------------------------------------------------------
    Case("sae-truncated", "truncated sae.safetensors", "audit",
         "corrupt or truncated safetensors file", 2,
         lambda c: audit(c, sae=_truncate_weights(c.copy("sae"), half=True))),
    Case("sae-garbage", "sae.safetensors full of garbage bytes", "eval",
         "corrupt or truncated safetensors file", 2,
         lambda c: evaluate(c, sae=_truncate_weights(c.copy("sae"), half=False))),
    Case("sae-missing-config", "an SAE folder without config.json", "eval",
         "SAE config not found", 2,
         lambda c: evaluate(c, sae=_drop(c.copy("sae"), "config.json"))),
    Case("sae-other-arch", "weights of one architecture under another's config", "audit",
         "missing tensors threshold for a batchtopk SAE", 2,
         lambda c: audit(c, sae=c.sae_config_with(_as_batchtopk))),
    Case("sae-other-size", "a config.json whose size disagrees with the weights", "eval",
         "is this checkpoint for another model?", 2,
         lambda c: evaluate(c, sae=c.sae_config_with(_double_latents))),
    Case("sae-huge-config", "a config.json claiming 10^12 latents for small weights", "eval",
         "is this checkpoint for another model?", 2,
         lambda c: evaluate(c, sae=c.sae_config_with(
             lambda d: d.update(n_latents=10**12, k_list=[8, 10**12])))),
    Case("sae-config-k-true", "a config.json with \"k\": true (JSON's boolean, not k = 1)", "eval",
         "got k=True", 2,
         lambda c: evaluate(c, sae=c.sae_config_with(lambda d: d.update(arch="topk", k=True)))),
    Case("sae-unknown-arch", "an unknown architecture in config.json", "eval",
         "unknown architecture 'jumprelu'", 2,
         lambda c: evaluate(c, sae=c.sae_config_with(lambda d: d.update(arch="jumprelu")))),
    Case("interrupted-run-no-resume", "training into a folder with an interrupted run, without --resume",
         "train", "holds an interrupted run (use --resume", 2,
         lambda c: [a for a in interrupted_checkpoint(c, []) if a != "--resume"]),
    Case("train-into-foreign-folder", "training into a folder holding someone's config.json", "train",
         "holds config.json and training.json but no model", 2,
         lambda c: train_into_foreign_folder(c), after=foreign_files_kept),
    Case("report-over-input", "an audit report path that is one of its inputs (--json LABELS.csv)",
         "audit", "is an input of this run", 2,
         lambda c: audit(c, labels=foreign_files(c, "in", "labels.csv") / "labels.csv",
                         json=c.tmp / "in" / "labels.csv"),
         after=foreign_files_kept),
    Case("reports-same-file", "two report paths naming one file (--json X --html X)", "discover",
         "--json and --html both name", 2,
         lambda c: ["discover", *audit(c, json=c.tmp / "r", html=c.tmp / "r", spurious=None)[1:]],
         after=lambda c: not (c.tmp / "r").exists() or pytest.fail("a report was written")),
    Case("check-junit-over-results", "check --junit naming the results file it re-judges", "check",
         "is an input of this run", 2,
         lambda c: ["check", "--config", c.text("gate.yaml", "gates: {}\n"),
                    c.copy("results"), "--junit", c.tmp / f"copy-{c.world['results'].name}"],
         after=lambda c: json.loads((c.tmp / f"copy-{c.world['results'].name}").read_text())),
    Case("training-diverges", "a learning rate that makes the loss NaN", "train",
         "training diverged at step", 2,
         lambda c: train(c, c.world["store"], "--lr", "1e30"), after=sae_weights_not_published),
    Case("negative-seed", "--seed -1", "train", "--seed must lie in [0, 2^32)", 2,
         lambda c: train(c, c.world["store"], "--seed", "-1")),
    Case("expansion-nan", "--expansion nan", "train", "--expansion must be a finite number", 2,
         lambda c: [a for a in train(c, c.world["store"], "--expansion", "nan")
                    if a not in ("--n-latents", "64")]),
    Case("dead-window-zero", "--dead-window 0 (every latent dead from the first step)", "train",
         "--dead-window must be at least 1", 2,
         lambda c: train(c, c.world["store"], "--dead-window", "0")),
    Case("seed-out-of-range-audit", "--seed 2^32 (one past what numpy and torch accept)", "audit",
         "--seed must lie in [0, 2^32), got 4294967296", 2,
         lambda c: audit(c, seed=2**32), after=no_report),
    Case("resume-other-arch", "--resume with a checkpoint of another architecture", "train",
         "checkpoint was made with different SAE settings", 2,
         lambda c: interrupted_checkpoint(c, ["--arch", "topk", "--k", "8"])),
    Case("pickled-reference-pt", "a reference .pt whose pickle runs code", "eval",
         "refused to load", 2,
         lambda c: evaluate(c, sae=evil_reference_pt(c)), after=payload_did_not_run),
    Case("reference-pt-not-a-tensor", "a reference .pt whose latent_bias is a string", "eval",
         "'latent_bias' must be a tensor, got str", 2,
         lambda c: evaluate(c, sae=reference_pt(c, "string-bias"))),
    Case("reference-pt-truncated", "a truncated reference .pt (a zip archive cut short)", "eval",
         "corrupt or truncated checkpoint", 2,
         lambda c: evaluate(c, sae=reference_pt(c, "truncated"))),
    Case("pickled-classifier", "a pickled .pt (not TorchScript) as --classifier", "audit",
         "not a TorchScript module but a torch.save checkpoint", 2,
         lambda c: audit(c, classifier=evil_classifier(c)), after=payload_did_not_run),
    Case("classifier-raises", "a TorchScript classifier that fails on embeddings (an image model "
         "without --classifier-input image)", "audit",
         "if it reads images, pass --classifier-input image", 2,
         lambda c: audit(c, classifier=scripted_classifier(c, "image")), after=no_report),
    Case("classifier-nan", "a TorchScript classifier returning NaN", "audit",
         "returned NaN or inf", 2,
         lambda c: audit(c, classifier=scripted_classifier(c, "nan")), after=no_report),
    Case("classifier-short-batch", "a TorchScript classifier returning fewer rows than its batch",
         "audit", "expected [B], [B, 1] or [B, 2]", 2,
         lambda c: audit(c, classifier=scripted_classifier(c, "short")), after=no_report),
    Case("pickled-linear-head", "a .npz head with pickled object arrays", "audit",
         "unreadable linear head", 2,
         lambda c: audit(c, classifier=evil_npz(c)), after=payload_did_not_run),
    Case("pickled-pretrained", "--pretrained pickle that defeats open_clip's weights_only", "embed texts",
         "refused to load", 2,
         lambda c: ["embed", "texts", vocab(c), *_clip_with(c, evil_pretrained(c)),
                    "--out", c.tmp / "s"],
         after=payload_did_not_run),
    Case("pickled-local-dir", "a local-dir: model folder whose weights defeat open_clip's weights_only",
         "embed texts", "open_clip_pytorch_model.bin: refused to load", 2,
         lambda c: ["embed", "texts", vocab(c), "--model", f"local-dir:{evil_local_dir(c)}",
                    "--device", "cpu", "-q", "--out", c.tmp / "s"],
         after=payload_did_not_run),
    Case("pretrained-other-activation", "--model ViT-L-14 --pretrained openai (QuickGELU weights, GELU config)",
         "embed texts", "use --model ViT-L-14-quickgelu", 2,
         lambda c: ["embed", "texts", vocab(c), "--model", "ViT-L-14", "--pretrained", "openai",
                    "--out", c.tmp / "s"]),
    Case("pretrained-torchscript", "--pretrained TorchScript archive (OpenAI's original CLIP .pt)",
         "embed texts", "a TorchScript archive is code", 2,
         lambda c: ["embed", "texts", vocab(c), *_clip_with(c, scripted_classifier(c, "nan")),
                    "--out", c.tmp / "s"]),
    Case("head-wrong-dim", "a linear head for 16-dimensional embeddings", "audit",
         f"expected [C, {D}] for these embeddings", 2,
         lambda c: audit(c, classifier=_head(c, 16))),
    Case("head-complex", "a linear head with complex weights", "audit",
         "weight must hold real numbers, got dtype complex64", 2,
         lambda c: audit(c, classifier=_head(c, D, np.complex64))),
    Case("head-strings", "a linear head whose weights are strings", "audit",
         "weight must hold real numbers", 2,
         lambda c: audit(c, classifier=_head(c, D, np.str_))),
    Case("integrity", "embeddings the SAE cannot reconstruct (noise)", "audit",
         "integrity", 3,
         lambda c: audit(c, **with_rows(c, _noise(c), c.labels()))),
    # --- banks and concepts ---------------------------------------------------------------
    Case("bank-other-sae", "a concept bank built for another SAE", "audit",
         "was built for another SAE", 2,
         lambda c: audit(c, bank=c.bank_with(lambda d: d["sae"].update(fingerprint="sha256:0"))),
         after=no_report),
    Case("bank-latent-out-of-range", "a bank naming latent 999 of a 17-latent SAE", "audit",
         "names latent 999, but the bank's SAE has 17 latents", 2,
         lambda c: audit(c, bank=c.bank_with(lambda d: d["latents"][0].update(latent=999)))),
    Case("bank-concept-unknown-latent", "a bank concept listing a latent the bank lacks", "audit",
         "concept #0 lists latent 999, which is not in 'latents'", 2,
         lambda c: audit(c, bank=c.bank_with(lambda d: d["concepts"][0].update(latents=[0, 999])))),
    Case("bank-bad-field", "a bank with threshold: abc", "audit",
         "threshold must be a number, got 'abc'", 2,
         lambda c: audit(c, bank=c.bank_with(lambda d: d.update(threshold="abc")))),
    Case("bank-malformed-yaml", "a bank that is not valid YAML", "audit",
         "malformed YAML (line 3)", 2,
         lambda c: audit(c, bank=c.text("b.yaml", "format: msae-audit/concept-bank\nconcepts: [\n"))),
    Case("bank-python-tag", "a bank with a !!python/object tag", "audit",
         "python/object/apply:os.system' is not allowed", 2,
         lambda c: audit(c, bank=c.text("b.yaml", f"concepts: {python_tag(c)}\n")),
         after=payload_did_not_run),
    Case("bank-not-utf8", "a Latin-1 bank file", "audit",
         "not UTF-8 text", 2,
         lambda c: audit(c, bank=c.text("b.yaml", "name: caf\xe9\n".encode("latin-1")))),
    Case("bank-word-file-damaged", "a bank whose word file is not safetensors", "audit",
         "not a word file", 2, lambda c: audit(c, bank=_bank_with_word_file(c, b"{not a tensor"))),
    Case("bank-word-file-replaced", "a bank whose word file is not the one it records", "audit",
         "does not match the sha256 the bank records", 2,
         lambda c: audit(c, bank=_bank_with_word_file(c, b"other", recorded=b"original"))),
    Case("bank-name-escape", "concepts --name ../../x", "concepts",
         "invalid bank name '../../x'", 2,
         lambda c: concepts(c, vocab(c), name="../../x"),
         after=lambda c: _nothing_written_above(c)),
    Case("bank-name-control", "a bank name with a control character", "concepts",
         "invalid bank name 'a\\x1bb'", 2,
         lambda c: concepts(c, vocab(c), name="a\x1bb")),
    Case("unknown-concept", "search --set with a concept the bank does not have", "search",
         "did you mean: blond hair", 2,
         lambda c: ["search", "--gallery", c.world["store"], "--sae", c.world["sae"],
                    "--bank", c.world["bank"], "--row", "1", "--set", "blond hiar=0"]),
    Case("search-edit-twice", "search editing one concept twice (--set and --remove)", "search",
         "edit each concept once", 2,
         lambda c: ["search", "--gallery", c.world["store"], "--sae", c.world["sae"],
                    "--bank", c.world["bank"], "--row", "1", "--set", "blond hair=2",
                    "--remove", "blond hair"]),
    Case("eval-other-model", "eval on a store of another CLIP model than the SAE's", "eval",
         "holds embeddings of CLIP model 'ViT-B-32'", 2,
         lambda c: evaluate(c, _manifest(c.copy("store"), model="ViT-B-32"))),
    Case("concepts-other-model-texts", "text embeddings of another CLIP model", "concepts",
         "holds embeddings of CLIP model 'ViT-B-32'", 2,
         lambda c: concepts(c, vocab(c), _manifest(c.copy("store"), model="ViT-B-32"))),
    Case("concepts-other-model-probe", "probe images of another CLIP model", "concepts",
         "holds embeddings of CLIP model 'ViT-B-32'", 2,
         lambda c: concepts(c, vocab(c), probe=_manifest(c.copy("store"), model="ViT-B-32"))),
    Case("concepts-nan-threshold", "concepts --threshold nan", "concepts",
         "--threshold must be a finite cosine", 2,
         lambda c: [*concepts(c, vocab(c)), "--threshold", "nan"]),
    Case("concepts-unknown-device", "concepts --device tpu (text embeddings given: no device used)",
         "concepts", "unknown device 'tpu'", 2,
         lambda c: [*concepts(c, vocab(c)), "--device", "tpu"]),
    Case("search-nan-gallery", "search in a gallery with a NaN row", "search",
         "row 7 contains NaN or inf", 2,
         lambda c: ["search", "--gallery", c.npy("g.npy", _poke(c.embeddings(), 7, np.nan)),
                    "--sae", c.world["sae"], "--bank", c.world["bank"], "--row", "1",
                    "--json", c.tmp / "s.json"],
         after=search_json_not_written),
    Case("search-inf-gallery", "search --set in a gallery with an infinite row", "search",
         "row 3 contains NaN or inf", 2,
         lambda c: ["search", "--gallery", c.npy("g.npy", _poke(c.embeddings(), 3, np.inf)),
                    "--sae", c.world["sae"], "--bank", c.world["bank"], "--row", "1",
                    "--set", "blond hair=1"]),
    Case("vocab-binary", "a binary file as vocabulary", "concepts",
         "is a binary file, not text", 2,
         lambda c: concepts(c, vocab(c, b"\x00\x01\x02red"))),
    Case("vocab-not-utf8", "a Latin-1 vocabulary", "concepts",
         "is not UTF-8 text (line 2)", 2,
         lambda c: concepts(c, vocab(c, "red\ncaf\xe9\n".encode("latin-1")))),
    Case("vocab-empty", "a vocabulary with only comments", "concepts",
         "is empty (no entries besides blank lines and comments)", 2,
         lambda c: concepts(c, vocab(c, "# nothing\n\n"))),
    Case("vocab-unknown", "an unknown built-in vocabulary name", "concepts",
         "unknown vocabulary 'colours'", 2,
         lambda c: concepts(c, "colours")),
    Case("text-embeddings-rows", "text embeddings not row-aligned with the vocabulary", "concepts",
         "5 text embeddings for 3 vocabulary entries", 2,
         lambda c: concepts(c, vocab(c), c.npy("t5.npy", _text_embeddings(c, 5)))),
    Case("probe-images-dim", "probe images of another dimension than the SAE's", "concepts",
         "probe images have dimension 5, but the SAE expects", 2,
         lambda c: concepts(c, vocab(c), probe=c.npy("p5.npy", c.embeddings()[:, :5].copy()))),
    Case("probe-images-nan", "probe images with NaN", "concepts",
         "probe image embeddings contain NaN or inf", 2,
         lambda c: concepts(c, vocab(c), probe=c.npy("pn.npy", _poke(c.embeddings(), 1, np.nan)))),
    Case("text-embeddings-nan", "text embeddings with NaN", "concepts",
         "text embeddings contain NaN or inf", 2,
         lambda c: concepts(c, vocab(c), c.npy("tn.npy", _poke(_text_embeddings(c, 3), 1, np.nan)))),
    # --- gate files and configs -----------------------------------------------------------
    Case("gate-unknown-check", "a gate naming an unknown check", "audit",
         "unknown check 'worst_group_acuracy'", 2,
         lambda c: gate(c, "gates:\n  worst_group_acuracy: {min: 0.8}\n"), after=no_report),
    Case("gate-malformed-yaml", "a gate file that is not valid YAML", "audit",
         "malformed YAML", 2,
         lambda c: gate(c, "gates: [worst_group_accuracy\n"), after=no_report),
    Case("gate-python-tag", "a gate with a !!python/object tag", "audit",
         "is not allowed", 2,
         lambda c: gate(c, f"gates: {python_tag(c)}\n"), after=payload_did_not_run),
    Case("gate-not-a-number", "a gate threshold that is not a number", "audit",
         "gates.accuracy_gap.max must be a number, got 'high'", 2,
         lambda c: gate(c, "gates:\n  accuracy_gap: {max: high}\n")),
    Case("gate-not-utf8", "a Latin-1 gate file", "check",
         "not UTF-8 text", 2,
         lambda c: check(c, saved_results(c), c.text("g.yaml", "# caf\xe9\n".encode("latin-1")))),
    Case("gate-is-a-folder", "a folder given as the gate file", "check",
         "is a folder, not a file", 2,
         lambda c: check(c, saved_results(c), c.tmp)),
    Case("config-python-tag", "a training config with a !!python/object tag", "train",
         "is not allowed", 2,
         lambda c: train(c, c.world["store"], "--config", c.text("t.yaml", f"epochs: {python_tag(c)}\n")),
         after=payload_did_not_run),
    Case("config-bad-value", "a training config with epochs: many", "train",
         "config option 'epochs' must be an integer, got 'many'", 2,
         lambda c: ["train", "--embeddings", c.world["store"], "--out", c.tmp / "o",
                    "--config", c.text("t.yaml", "epochs: many\n")]),
    Case("config-unknown-option", "a training config with an unknown option", "train",
         "unknown option 'epoch'", 2,
         lambda c: train(c, c.world["store"], "--config", c.text("t.yaml", "epoch: 3\n"))),
    # --- CelebA -------------------------------------------------------------------------------
    Case("celeba-missing-root", "a CelebA folder that does not exist", "celeba",
         "CelebA root not found", 2,
         lambda c: celeba(c, c.tmp / "nowhere"), details=True),
    Case("celeba-missing-root-to-embed", "a CelebA folder that does not exist, to embed (no --embeddings)",
         "celeba", "CelebA root not found", 2,
         lambda c: _without(celeba(c, c.tmp / "nowhere"), "--embeddings"), details=True),
    Case("celeba-no-partition", "CelebA without list_eval_partition.txt", "celeba",
         "list_eval_partition.txt is missing", 2,
         lambda c: celeba(c, broken_celeba(c, lambda r: (r / "list_eval_partition.txt").unlink())),
         details=True),
    Case("celeba-truncated-attributes", "list_attr_celeba.txt cut short", "celeba",
         "line 1 announces 30 images but 8 rows follow", 2,
         lambda c: celeba(c, broken_celeba(c, lambda r: _write_attr(r, _attr_lines(r)[:10]))),
         details=True),
    Case("celeba-bad-value", "an attribute value other than -1/1", "celeba",
         "attribute values must be -1 or 1 (image 000002.jpg)", 2,
         lambda c: celeba(c, broken_celeba(c, _bad_attribute_value)), details=True),
    Case("celeba-partial-partition", "a partition file missing images", "celeba",
         "no split for image 000002.jpg", 2,
         lambda c: celeba(c, broken_celeba(
             c, lambda r: (r / "list_eval_partition.txt").write_text("000001.jpg 0\n"))),
         details=True),
    Case("celeba-duplicate-ids", "an image listed twice in list_attr_celeba.txt", "celeba",
         "000002.jpg is listed more than once", 2,
         lambda c: celeba(c, broken_celeba(c, _duplicate_image)), details=True),
    Case("celeba-not-utf8", "a binary list_attr_celeba.txt", "celeba",
         "not UTF-8 text", 2,
         lambda c: celeba(c, broken_celeba(
             c, lambda r: (r / "list_attr_celeba.txt").write_bytes(b"30\n\xff\xfe\n"))),
         details=True),
    Case("celeba-no-images", "CelebA without its image folder", "embed celeba",
         "CelebA images folder not found", 2,
         lambda c: ["embed", "celeba", "--root",
                    broken_celeba(c, lambda r: shutil.rmtree(r / "img_align_celeba")),
                    *c.clip, "--out", c.tmp / "s"],
         details=True),
    # --- images ---------------------------------------------------------------------------
    Case("unreadable-image", "a damaged image file", "embed images",
         "cannot read image", 2,
         lambda c: ["embed", "images", _evil_image(c), *c.clip, "--out", c.tmp / "s",
                    "--workers", "0"],
         after=lambda c: _named_in_output(c, "zz_broken.png")),
    Case("image-float-pixels", "a 32-bit float TIFF (no fixed range to read as colours)",
         "embed images", "32-bit floating-point pixels have no fixed range", 2,
         lambda c: ["embed", "images", _odd_image(c, "zz_float.tif"), *c.clip, "--out",
                    c.tmp / "s", "--workers", "0"],
         after=lambda c: _named_in_output(c, "zz_float.tif")),
    Case("image-name-not-utf8", "an image whose file name is not UTF-8 (Latin-1 bytes)",
         "embed images", "is not valid UTF-8: rename it", 2,
         lambda c: ["embed", "images", _odd_image(c, os.fsdecode(b"caf\xe9.png")), *c.clip,
                    "--out", c.tmp / "s", "--workers", "0"]),
    Case("embed-out-not-a-store", "--out holding a plain embeddings.npy (not a store)",
         "embed texts", "which is not part of a store (no manifest.json)", 2,
         lambda c: ["embed", "texts", vocab(c), *c.clip, "--out", _plain_npy_folder(c)],
         after=lambda c: _plain_npy_kept(c)),
    Case("images-left-out", "an image folder with a dangling symlink and a .heic photo",
         "embed images", "warning: left out 2 file(s)", 0,
         lambda c: ["embed", "images", _left_out_folder(c), *c.clip, "--out", c.tmp / "s",
                    "--workers", "0"],
         after=lambda c: _named_in_output(c, "1 dangling symlink (gone.png)"),
         readme="the store is written, after one line: `warning: left out 2 file(s) under …: "
                "1 dangling symlink (gone.png); 1 not an image type that is read (photo.heic)…`"),
    Case("manifest-no-path", "an image manifest CSV without a path column", "embed images",
         "manifest needs a 'path' column", 2,
         lambda c: ["embed", "images", c.text("m.csv", "file,label\na.png,1\n"), *c.clip,
                    "--out", c.tmp / "s"]),
    # --- outputs --------------------------------------------------------------------------
    Case("read-only-output", "a report path in a read-only folder", "check",
         "permission denied", 2,
         lambda c: check(c, saved_results(c), None, "--json", read_only_folder(c) / "r.json"),
         after=read_only_left_empty),
    Case("disk-full-report", "the disk fills up while a report is written", "check",
         "no space left on device", 2,
         lambda c: check(c, saved_results(c), None, "--json", disk_full(c, "reports/r.json")),
         after=previous_version_survives),
    Case("disk-full-bank", "the disk fills up while a concept bank is written", "concepts",
         "no space left on device", 2,
         lambda c: [*concepts(c, vocab(c))[:-2], "--out", disk_full(c, "banks/b.yaml")],
         after=previous_version_survives),
    Case("file-size-limit-weights", "writing the SAE weights fails (file size limit)", "train",
         "file too large", 2,
         lambda c: train(c, c.world["store"], "--n-latents", "512"),
         after=sae_weights_not_published, child=True, file_limit=64 * 1024),
    Case("output-under-a-file", "an output folder that is an existing file", "check",
         "a file with that name exists", 2,
         lambda c: check(c, saved_results(c), None, "--json", c.text("afile", "x") / "r.json")),
    # --- saved results ------------------------------------------------------------------
    Case("results-not-json", "check on a file that is not JSON", "check",
         "is not valid JSON", 2,
         lambda c: check(c, c.text("r.json", "{oops"))),
    Case("results-wrong-schema", "check on JSON that is not an audit result", "check",
         "not an audit result", 2,
         lambda c: check(c, c.text("r.json", "[1, 2]"))),
    Case("results-bad-values", "check on an audit result with a non-numeric metric", "check",
         "audit result is malformed", 2,
         lambda c: check(c, c.text("r.json", json.dumps(_bad_result(c))))),
    # --- the Hugging Face Hub ---------------------------------------------------------------
    Case("hf-not-cached-offline", "--sae hf:… offline, not in the Hugging Face cache", "eval",
         "not in the Hugging Face cache", 2,
         lambda c: evaluate(c, sae=offline_hub(c, "hf:WolodjaZ/MSAE"))),
    Case("hf-malformed-name", "--sae hf: without OWNER/REPO", "eval",
         "expected hf:OWNER/REPO", 2,
         lambda c: evaluate(c, sae="hf:MSAE")),
]  # fmt: skip


def offline_hub(ctx: Ctx, spec: str) -> str:
    """``spec`` with an empty Hub cache and HF_HUB_OFFLINE=1."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT"):
        ctx.monkeypatch.delenv(name, raising=False)
    ctx.monkeypatch.setenv("HF_HOME", str(ctx.tmp / "hf"))
    ctx.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return spec


# --- helpers used by the table ----------------------------------------------------------------


def _poke(x: np.ndarray, row: int, value: float) -> np.ndarray:
    x = np.array(x, dtype=np.float32)
    x[row, min(2, x.shape[1] - 1)] = value
    return x


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _drop(folder: Path, name: str) -> Path:
    (folder / name).unlink()
    return folder


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder


def _without(args: list, option: str) -> list:
    """``args`` without ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _manifest(folder: Path, **changes) -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _alter_shard(folder: Path) -> Path:
    """One value of the store's shard changed in place: same size, same row count."""
    shard = np.load(folder / "embeddings.npy", mmap_mode="r+")
    shard[5, 1] += 1.0
    shard.flush()
    del shard
    return folder


def _csv(ctx: Ctx, frame: pd.DataFrame) -> Path:
    path = ctx.tmp / "labels-mod.csv"
    frame.to_csv(path, index=False)
    return path


def _latin1_labels(ctx: Ctx) -> bytes:
    frame = ctx.labels()
    frame["id"] = [f"caf\xe9{i}" for i in range(len(frame))]
    return frame.to_csv(index=False).encode("latin-1")


def _other_paths(ctx: Ctx) -> dict:
    """A copy of the store with image paths, and labels naming the images in another order."""
    store = ctx.copy("store")
    meta = pd.read_csv(store / "metadata.csv")
    meta["path"] = [f"images/{i}.png" for i in range(len(meta))]
    meta.to_csv(store / "metadata.csv", index=False)
    labels = ctx.labels().assign(path=meta["path"].iloc[::-1].to_numpy())
    return {"embeddings": store, "labels": _csv(ctx, labels)}


def _blank(frame: pd.DataFrame, column: str, n: int) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype("Float64")
    frame.loc[: n - 1, column] = pd.NA
    return frame


def _no_blond_men(ctx: Ctx) -> dict:
    labels = ctx.labels()
    keep = ~((labels["Male"] == 1) & (labels["Blond_Hair"] == 1)).to_numpy()
    return with_rows(ctx, ctx.embeddings()[keep], labels[keep])


def _truncate_weights(sae: Path, half: bool) -> Path:
    weights = sae / "sae.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if half else b"\xff" * 64)
    return sae


def _as_batchtopk(config: dict) -> None:
    config.update(arch="batchtopk", k=4)
    config.pop("k_list", None)


def _double_latents(config: dict) -> None:
    config.update(n_latents=config["n_latents"] * 2, k_list=[config["n_latents"] * 2])


def _head(ctx: Ctx, dim: int, dtype: type = np.float32) -> Path:
    path = ctx.tmp / "head.npz"
    np.savez(path, weight=np.ones((1, dim)).astype(dtype), bias=np.zeros(1, np.float32))
    return path


def _noise(ctx: Ctx) -> np.ndarray:
    x = ctx.embeddings()
    rng = np.random.default_rng(0)
    return rng.normal(size=x.shape).astype(np.float32) * x.std()


def _clip_with(ctx: Ctx, weights: Path) -> list[str]:
    args = list(ctx.clip)
    args[args.index("--pretrained") + 1] = str(weights)
    return args


def _bad_attribute_value(root: Path) -> None:
    lines = _attr_lines(root)
    lines[3] = lines[3].replace(" 1", " 2", 1).replace("-1", " 2", 1)
    _write_attr(root, lines)


def _duplicate_image(root: Path) -> None:
    lines = _attr_lines(root)
    lines[4] = lines[3]
    _write_attr(root, lines)


def _non_utf8_copy(ctx: Ctx, key: str) -> Path:
    target = Path(os.fsdecode(bytes(ctx.tmp) + b"/caf\xe9-" + ctx.world[key].name.encode()))
    shutil.copytree(ctx.world[key], target)
    return target


def _json_has(ctx: Ctx, words: str) -> None:
    text = (ctx.tmp / "out" / "a.json").read_text(encoding="utf-8")  # valid UTF-8
    assert words in text and json.loads(text)


def _nothing_written_above(ctx: Ctx) -> None:
    assert not (ctx.tmp.parent / "x.yaml").exists() and not (ctx.tmp / "x.yaml").exists()
    assert not list(ctx.tmp.rglob("*.yaml"))


def _named_in_output(ctx: Ctx, words: str) -> None:
    assert words in ctx.notes["output"]


def _bad_result(ctx: Ctx) -> dict:
    result = json.loads(saved_results(ctx).read_text())
    result["accuracy"] = "high"
    return result


# ------------------------------------------------------------------------------------------
# Running the table
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[dict[str, Path], list[str], Path]:
    from audit.data.celeba import write_fake_celeba
    from audit.report import audit_files
    from tests.audit_worlds import write_world
    from tests.world_helpers import make_random_clip

    root = tmp_path_factory.mktemp("bad-inputs")
    world = write_world(root / "world", n_samples=1000, seed=0)
    outcome = audit_files(
        world["store"], sae=world["sae"], bank=world["bank"], classifier=world["head"],
        target="Male", spurious="Blond_Hair", out_dir=root / "reports", stem="saved",
    )  # fmt: skip
    world["results"] = outcome.paths["json"]
    config, weights, _ = make_random_clip(root / "clip")
    clip = ["--model", str(config), "--pretrained", str(weights), "--device", "cpu", "-q"]
    celeba_root = write_fake_celeba(root / "celeba", n_images=30)
    return world, clip, celeba_root  # cases copy what they damage (Ctx.copy)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, monkeypatch, capsys):
    world, clip, celeba_root = shared
    ctx = Ctx(dict(world), clip, celeba_root, tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)  # concept banks and default reports land here, if anywhere
    args = [str(a) for a in case.build(ctx)]
    if case.child:
        code, out, err = _run_child(args, case.file_limit, dict(case.child_env))
    else:
        from audit.cli import run

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # what a user's terminal shows
            code = run(args)
        captured = capsys.readouterr()
        out = captured.out
        err = "".join(f"{w.category.__name__}: {w.message}\n" for w in caught) + captured.err
    ctx.notes["output"] = out + err
    assert code == case.code, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in out + err
    if case.code == 2:
        _assert_one_line_error(err, case)
    else:
        assert case.shows.lower() in " ".join((out + err).split()).lower(), out + err
    if case.after is not None:
        case.after(ctx)


def _assert_one_line_error(err: str, case: Case) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, err
    line = lines[errors[0]]
    assert case.shows.lower() in line.lower(), line
    assert not [x for x in lines[: errors[0]] if "warning" in x.lower()], err
    rest = lines[errors[0] + 1 :]
    if case.details:  # the expected CelebA tree follows, every line intact (not re-wrapped)
        from audit.data.celeba import EXPECTED_TREE

        assert [x.rstrip() for x in rest] == [x.rstrip() for x in EXPECTED_TREE.splitlines()]
    else:
        assert rest == [], err  # the message is the last thing printed


def _run_child(args: list[str], limit: int | None, extra_env: dict) -> tuple[int, str, str]:
    """``python -m audit ARGS``; with ``limit``, files larger than that are refused by the
    kernel (RLIMIT_FSIZE), the way a full disk refuses them."""
    import resource
    import signal

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "audit", *args], cwd=REPO, env={**env, **extra_env},
        capture_output=True, timeout=300, preexec_fn=limit_file_size if limit else None,
    )  # fmt: skip
    decode = lambda b: b.decode("utf-8", "backslashreplace")  # noqa: E731
    return proc.returncode, decode(proc.stdout), decode(proc.stderr)


# ------------------------------------------------------------------------------------------
# docs/robustness.md
# ------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def matrix_table() -> str:
    lines = [
        "| # | id | bad input | command | what the user sees | exit |",
        "| ---: | --- | --- | --- | --- | :---: |",
    ]
    # The own-model cases live beside their fixtures (tests/models/); the table lists them too.
    from tests.models.test_own_model_bad_inputs import OWN_MODEL_CASES

    for i, case in enumerate([*CASES, *OWN_MODEL_CASES], start=1):
        seen = case.readme or (f"`error: …{case.shows}…`" if case.code == 2 else _outcome(case))
        lines.append(
            f"| {i} | `{case.id}` | {_cell(case.what)} | `{case.command}` | {_cell(seen)} "
            f"| {case.code} |"
        )
    return "\n".join(lines)


def _outcome(case: Case) -> str:
    if case.code == 0:
        return "the group checks are `skipped` (never passed), reports written"
    if case.code == 3:
        return "`ERROR` verdict: integrity check failed, no concept attributed, reports written"
    return case.shows


def test_docs_matrix_is_the_cases():
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/robustness.md needs {BEGIN} … {END}"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == matrix_table(), (
        "docs/robustness.md matrix out of date: python -m tests.test_bad_inputs --update-docs"
    )


def test_matrix_covers_every_item_of_the_issue():
    ids = {c.id for c in CASES}
    assert len(CASES) >= 25 and len(ids) == len(CASES)
    for needed in (
        "dim-mismatch", "nan-embeddings", "empty-npy", "labels-row-mismatch",
        "labels-missing-column", "single-class-target", "empty-group", "groups-below-min-size",
        "sae-truncated", "pickled-reference-pt", "sae-other-arch", "bank-other-sae",
        "unknown-concept", "vocab-not-utf8", "bank-malformed-yaml", "gate-unknown-check",
        "celeba-no-partition", "unreadable-image", "read-only-output", "disk-full-report",
        "labels-not-utf8", "bank-name-escape",
    ):  # fmt: skip
        assert needed in ids, needed


def _update_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{matrix_table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] in (["--update-docs"], ["--update-readme"]):
        _update_docs()
    else:
        print(matrix_table())
