"""Property tests ("fuzzing") of every parser that reads user files: vocabularies, labels CSVs
(and the audit's coding of their columns), CelebA attribute and partition files, gate YAML,
concept-bank YAML, SAE configs, store manifests, ``.npy`` files and saved audit results.

The property is the contract of exit code 2: whatever the bytes, a parser returns a valid
result or raises :class:`audit.errors.InputError` — never another exception (which the command
line would report as an internal error, exit 4).

Inputs are arbitrary bytes and text, and — more effective — valid files with random byte-level
mutations and structured documents with random values in every field.

Two profiles: the default (``fuzz-ci``) is small, derandomised and quick, for the test suite;
``HYPOTHESIS_PROFILE=fuzz`` runs many examples with a fresh seed each time and remembers what
failed (``.hypothesis/``)::

    HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz_parsers.py
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from audit.errors import InputError

settings.register_profile(
    "fuzz-ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FUZZ = settings(
    settings.get_profile("fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-ci")
)

_DIR = Path(tempfile.mkdtemp(prefix="msae-audit-fuzz-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)  # module-wide: no tmp_path fixture here


def _file(name: str, data: bytes) -> Path:
    path = _DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------


@st.composite
def mutated(draw, valid: bytes, max_edits: int = 6) -> bytes:
    """``valid`` with a few random byte edits (replace, insert, delete, duplicate, truncate)."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(0, max_edits))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "dup", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"\x00", b"\n", b",", b'"', b"\xff", b"-", b"1", b" ", b"\r"])
                | st.binary(min_size=1, max_size=8)
            )
        elif kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif kind == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


def files_like(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        mutated(valid),
        st.binary(max_size=512),
        st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def perturbed(draw, valid: dict, keep_types: float = 0.5) -> dict:
    """``valid`` (a nested dict) with some values replaced by arbitrary JSON-ish values, keys
    dropped or added."""
    out = {}
    for key, value in valid.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # dropped
        if choice <= 3:
            out[key] = draw(JSONISH)
        elif isinstance(value, dict) and choice <= 6:
            out[key] = draw(perturbed(value))
        elif isinstance(value, list) and value and choice <= 6:
            out[key] = [draw(perturbed(v)) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    for key in draw(st.lists(st.text(max_size=10), max_size=2)):
        out[key] = draw(JSONISH)
    return out


def _expect_input_error_only(call):
    try:
        return call()
    except InputError:
        return None


# ------------------------------------------------------------------------------------------
# Vocabularies
# ------------------------------------------------------------------------------------------

VOCAB = "# colours\nred\n  dark   blue \n\nRed\ncafé\n\ufeffgreen\n".encode()


@FUZZ
@given(files_like(VOCAB))
@example(VOCAB)
def test_vocabulary_reader(data):
    from audit.concepts import read_vocabulary_file

    entries = _expect_input_error_only(lambda: read_vocabulary_file(_file("v.txt", data)))
    if entries is not None:
        assert entries and all(isinstance(e, str) and e and "\n" not in e for e in entries)
        assert len({e.lower() for e in entries}) == len(entries)  # case-insensitive duplicates
        assert all(len(e) <= 200 and e == " ".join(e.split()) for e in entries)


# ------------------------------------------------------------------------------------------
# Labels CSV, and how the audit codes its columns
# ------------------------------------------------------------------------------------------

LABELS = (
    b"id,Male,Blond_Hair,split\na,1,0,train\nb,0,1,test\nc,1,1,test\nd,0,0,train\ne,1,0,valid\n"
)


@FUZZ
@given(files_like(LABELS), st.sampled_from(["auto", "all", "train", "test"]), st.booleans())
@example(LABELS, "auto", False)
def test_labels_csv_reader_and_cells(data, split, probe):
    from audit.fairness.attributes import build_cells
    from audit.fairness.selection import select_rows
    from audit.store import read_labels_csv

    frame = _expect_input_error_only(lambda: read_labels_csv(_file("l.csv", data)))
    if frame is None or frame.shape[1] < 2:
        return
    target, spurious = frame.columns[1 if frame.shape[1] > 2 else 0], frame.columns[-1]
    cells = _expect_input_error_only(lambda: build_cells(frame, target, spurious))
    if cells is None:
        return
    assert set(np.unique(cells.y)) <= {0, 1} and len(cells.y) == len(frame)
    rows = _expect_input_error_only(lambda: select_rows(frame, cells, split, probe, seed=0))
    if rows is not None:
        assert rows.audit.size == 0 or (rows.audit.min() >= 0 and rows.audit.max() < len(frame))


# ------------------------------------------------------------------------------------------
# CelebA
# ------------------------------------------------------------------------------------------


def _celeba_files(n: int = 4) -> tuple[bytes, bytes, bytes, bytes]:
    names = [f"A{i:02d}" for i in range(38)] + ["Blond_Hair", "Male"]
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], size=(n, 40))
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    attr = "\n".join(
        [str(n), " ".join(names)]
        + [f"{i} " + " ".join(f"{v:2d}" for v in row) for i, row in zip(ids, values, strict=True)]
    )
    part = "\n".join(f"{i} {k % 3}" for k, i in enumerate(ids))
    attr_csv = (
        ",".join(["image_id", *names])
        + "\n"
        + "\n".join(",".join([i, *map(str, row)]) for i, row in zip(ids, values, strict=True))
    )
    part_csv = "image_id,partition\n" + "\n".join(f"{i},{k % 3}" for k, i in enumerate(ids))
    return (attr + "\n").encode(), (part + "\n").encode(), attr_csv.encode(), part_csv.encode()


ATTR, PART, ATTR_CSV, PART_CSV = _celeba_files()


@FUZZ
@given(
    st.booleans(), mutated(ATTR, 4), mutated(PART, 3), mutated(ATTR_CSV, 4), mutated(PART_CSV, 3)
)
@example(False, ATTR, PART, ATTR_CSV, PART_CSV)
@example(True, ATTR, PART, ATTR_CSV, PART_CSV)
def test_celeba_attribute_and_partition_files(kaggle, attr, part, attr_csv, part_csv):
    import shutil

    from audit.data.celeba import N_ATTRIBUTES, read_celeba

    root = _DIR / "celeba"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if kaggle:
        (root / "list_attr_celeba.csv").write_bytes(attr_csv)
        (root / "list_eval_partition.csv").write_bytes(part_csv)
    else:
        (root / "list_attr_celeba.txt").write_bytes(attr)
        (root / "list_eval_partition.txt").write_bytes(part)
    data = _expect_input_error_only(lambda: read_celeba(root, require_images=False))
    if data is not None:
        table = data.table
        assert len(data.attributes) == N_ATTRIBUTES and table["id"].is_unique
        assert set(table["split"]) <= {"train", "valid", "test"}
        assert all(set(np.unique(table[a])) <= {0, 1} for a in data.attributes)


# ------------------------------------------------------------------------------------------
# Gate YAML and saved audit results (`msae-audit check`)
# ------------------------------------------------------------------------------------------

GATE = {
    "gates": {"worst_group_accuracy": {"min": 0.8}, "accuracy_gap": {"max": 0.1},
              "flagged_concepts": {"max": 0}},
    "concepts": {"min_dwga": 0.02, "max_q": 0.05, "allowlist": ["beard", "man"]},
    "bootstrap": {"samples": 1000, "seed": 0},
    "min_group_size": 100,
    "integrity": {"min_cosine": 0.9, "min_agreement": 0.9},
}  # fmt: skip
GATE_TEXT = yaml.safe_dump(GATE).encode()


def _dump(document) -> bytes:
    try:
        return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    except yaml.YAMLError:
        return b"{}"


@FUZZ
@given(st.one_of(files_like(GATE_TEXT), perturbed(GATE).map(_dump)))
@example(GATE_TEXT)
def test_gate_files(data):
    from audit.fairness.gate import load_gate

    gate = _expect_input_error_only(lambda: load_gate(_file("gate.yaml", data)))
    if gate is not None:
        assert all(set(b) <= {"min", "max"} for b in gate.gates.values())
        assert 0 < gate.max_q <= 1 and gate.bootstrap_samples >= 1
        json.dumps(gate.describe(), allow_nan=False)  # it goes into the audit JSON


def _saved_result() -> dict:
    """A real saved audit result (a golden one), trimmed to a few of each list (a smaller
    document: more perturbations per second)."""
    golden = Path(__file__).parent / "golden" / "expected" / "planted_bias_raw.json"
    result = json.loads(golden.read_text(encoding="utf-8"))
    result.update(inputs={"sae": result["inputs"]["sae"]}, gate={}, tool={"msae_audit": "0"})
    result["checks"] = result["checks"][:2]
    result["concepts"] = result["concepts"][:2]
    result["dose_response"] = result["dose_response"][:1]
    result["examples"] = [
        {**ex, "top_activating": ex["top_activating"][:1], "flipped": ex["flipped"][:1]}
        for ex in result["examples"][:1]
    ]
    return result


@st.composite
def one_field_perturbed(draw, valid: dict) -> dict:
    """``valid`` with one top-level field perturbed (deeply), or dropped, or a key added: most
    of the document stays sound, so the reader gets past the first field."""
    out = dict(valid)
    key = draw(st.sampled_from(sorted(valid)))
    value = valid[key]
    if isinstance(value, dict):
        out[key] = draw(perturbed(value))
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        out[key] = [draw(perturbed(v)) for v in value]
    elif draw(st.booleans()):
        out[key] = draw(JSONISH)
    else:
        del out[key]
    return out


@FUZZ
@given(one_field_perturbed(_saved_result()), st.one_of(perturbed(GATE), one_field_perturbed(GATE)))
@example(_saved_result(), GATE)
def test_saved_results_rejudged_by_any_gate(result, gate_doc):
    from rich.console import Console

    from audit.fairness import dumps, parse_gate, parse_result, rejudge
    from audit.report.junit import render_junit
    from audit.report.markdown import render_markdown
    from audit.report.terminal import checks_table, verdict_panel

    gate = _expect_input_error_only(lambda: parse_gate(gate_doc))
    saved = _expect_input_error_only(lambda: parse_result(result))
    if gate is None or saved is None:
        return
    out, _notes = rejudge(saved, gate)  # a parsed result is sound: re-judging cannot fail
    assert out.verdict in ("pass", "fail", "error", "ungated", "inconclusive")
    assert out.exit_code in (0, 1, 3)
    render_junit(out)  # `check` renders and writes what rejudge returns
    render_markdown(out)
    Console(file=io.StringIO(), width=120).print(verdict_panel(out), checks_table(out))
    json.loads(dumps(out))


# ------------------------------------------------------------------------------------------
# Image manifests (`embed images MANIFEST.csv`) and training configs (`train --config`)
# ------------------------------------------------------------------------------------------

IMAGE_MANIFEST = b"path,label\nimgs/a.png,cat\n/abs/b.jpg,dog\n../c.png,\n"


@FUZZ
@given(files_like(IMAGE_MANIFEST))
@example(IMAGE_MANIFEST)
def test_image_manifests(data):
    from audit.encoders import list_images

    table = _expect_input_error_only(lambda: list_images(_file("m.csv", data)))
    if table is not None:
        assert list(table.columns[:2]) == ["id", "path"] and len(table) > 0
        assert all(isinstance(p, str) for p in table["path"])


TRAIN_CONFIG = {"arch": "topk", "k": 4, "n_latents": 16, "epochs": 1, "batch_size": 32,
                "lr": 0.001, "seed": 1, "mean_center": True, "loss": "mse", "weighting": "uw"}  # fmt: skip


@FUZZ
@given(
    st.one_of(
        perturbed(TRAIN_CONFIG).map(_dump),
        one_field_perturbed(TRAIN_CONFIG).map(_dump),
        files_like(yaml.safe_dump(TRAIN_CONFIG).encode()),
    )
)
@example(yaml.safe_dump(TRAIN_CONFIG).encode())
def test_training_configs(data):
    """The config half of ``train --config``: every option is read and type-checked exactly as
    the command does before any training starts."""
    from audit.cli.options import read_config_file
    from audit.cli.train import TrainOptions

    config = _expect_input_error_only(lambda: read_config_file(_file("c.yaml", data), TrainOptions))
    if config is None:
        return
    kinds = {"arch": str, "k": int, "n_latents": int, "epochs": int, "batch_size": int,
             "lr": float, "seed": int, "mean_center": bool, "loss": str, "weighting": str,
             "expansion": float, "aux_coef": float, "out": Path}  # fmt: skip
    for name, value in config.items():
        assert value is None or isinstance(value, kinds.get(name, object)), (name, value)


# ------------------------------------------------------------------------------------------
# Concept banks and SAE configs
# ------------------------------------------------------------------------------------------

BANK = {
    "format": "msae-audit/concept-bank", "version": 1, "name": "b",
    "sae": {"fingerprint": "sha256:x", "n_latents": 8},
    "threshold": 0.2, "vocabulary": {"source": "v.txt"},
    "concepts": [
        {"latent": 0, "name": "red", "score": 0.5, "closest": "red", "validated": True,
         "alternatives": [["crimson", 0.4]], "self_rank": 1},
        {"latent": 1, "name": None, "score": 0.1, "closest": "tree", "validated": False,
         "alternatives": [], "self_rank": None},
    ],
}  # fmt: skip
BANK_V2 = {
    **{k: v for k, v in BANK.items() if k != "concepts"}, "version": 2,
    "concepts": [
        {"name": "red", "validated": True, "latents": [0, 2], "closest": "red", "score": 0.5,
         "image": {"word": "red", "polarity": "present", "selectivity": 7.5, "auc": 0.98,
                   "auc_threshold": 0.9}},
        {"name": "no frame", "validated": True, "latent": 3, "score": 0.1,
         "image": {"word": "frame", "polarity": "absent", "selectivity": 9.0}},
    ],
    "latents": [
        {"latent": j, "closest": "red", "score": 0.5, "alternatives": [["crimson", 0.4]],
         "self_rank": 1, "image": {"word": "red", "polarity": "present", "selectivity": 3.0}}
        for j in range(4)
    ],
}  # fmt: skip


@FUZZ
@given(
    st.one_of(
        perturbed(BANK).map(_dump),
        files_like(yaml.safe_dump(BANK).encode()),
        perturbed(BANK_V2).map(_dump),
        files_like(yaml.safe_dump(BANK_V2).encode()),
    )
)
@example(yaml.safe_dump(BANK).encode())
@example(yaml.safe_dump(BANK_V2).encode())
def test_concept_bank_files(data):
    from audit.concepts import load_bank

    bank = _expect_input_error_only(lambda: load_bank(_file("bank.yaml", data)))
    if bank is not None:
        latents = [c.latent for c in bank.concepts]
        assert len(set(latents)) == len(latents) and all(x >= 0 for x in latents)
        for c in bank.concepts:
            assert isinstance(c.label, str) and np.isfinite(c.score)
        _expect_input_error_only(lambda: bank.resolve("red"))
        _expect_input_error_only(lambda: bank.check_sae("sha256:x", n_latents=8))
        groups = bank.concept_groups(8)
        covered = [j for g in groups for j in g.latents]
        assert sorted(covered) == list(range(8))  # every latent in exactly one concept
        assert all(isinstance(g.label, str) for g in groups)


SAE_CONFIG = {
    "format": "msae-audit/sae", "version": 1, "arch": "matryoshka", "d_in": 8, "n_latents": 32,
    "k_list": [8, 16, 32], "weighting": "uw", "loss": "mse", "aux_k": 0, "aux_coef": 0.03,
    "mean_center": True, "embedding_model": None, "modality": None,
}  # fmt: skip


@FUZZ
@given(st.one_of(perturbed(SAE_CONFIG), one_field_perturbed(SAE_CONFIG)))
@example(SAE_CONFIG)
def test_sae_configs(document):
    from audit.sae.base import SAEConfig
    from audit.sae.registry import build_sae

    cfg = _expect_input_error_only(lambda: SAEConfig.from_json(document))
    if cfg is not None and 0 < cfg.n_latents <= 4096 and 0 < cfg.d_in <= 512:
        _expect_input_error_only(lambda: build_sae(cfg))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=60),
        st.from_regex(r"\d{1,5}_\d{1,4}_[A-Za-z]{2,14}(_[\w.]{0,6}){0,6}\.pth?", fullmatch=True),
    )
)
def test_reference_checkpoint_names(name):
    from audit.sae.reference import parse_reference_name

    settings_ = _expect_input_error_only(lambda: parse_reference_name(name))
    if settings_ is not None:
        assert settings_["arch"] in ("matryoshka", "topk", "batchtopk", "relu")


# ------------------------------------------------------------------------------------------
# Model files: SAE weights, reference .pt checkpoints, linear heads
# ------------------------------------------------------------------------------------------


def _sae_files() -> tuple[bytes, bytes]:
    import torch
    from safetensors.torch import save

    from audit.sae import SAEConfig, build_sae
    from audit.sae.checkpoint import model_tensors

    torch.manual_seed(0)
    model = build_sae(SAEConfig(arch="topk", d_in=8, n_latents=16, k=4))
    weights = save(model_tensors(model), metadata={"format": "msae-audit/sae", "arch": "topk"})
    reference = io.BytesIO()
    torch.save(
        {"model": {"encoder": torch.randn(8, 16), "latent_bias": torch.zeros(16),
                   "pre_bias": torch.zeros(8), "decoder": torch.randn(16, 8)},
         "mean_center": torch.zeros(8), "scaling_factor": 1.5},
        reference,
    )  # fmt: skip
    return weights, reference.getvalue()


SAE_WEIGHTS, REFERENCE_PT = _sae_files()
SAE_DIR_CONFIG = {"format": "msae-audit/sae", "version": 1, "arch": "topk", "d_in": 8,
                  "n_latents": 16, "k": 4}  # fmt: skip


@FUZZ
@given(mutated(SAE_WEIGHTS, 4))
@example(SAE_WEIGHTS)
def test_sae_weight_files(data):
    from audit.sae import load_sae

    folder = _DIR / "sae"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SAE_DIR_CONFIG))
    (folder / "sae.safetensors").write_bytes(data)
    model = _expect_input_error_only(lambda: load_sae(folder))
    if model is not None:
        import torch

        assert torch.isfinite(model.W_dec).all()


@FUZZ
@given(mutated(REFERENCE_PT, 4))
@example(REFERENCE_PT)
def test_reference_checkpoint_files(data):
    from audit.sae.reference import load_reference_checkpoint

    path = _file("16_8_TopKReLU_4_False_False_0.0_cc3m.pt", data)
    _expect_input_error_only(lambda: load_reference_checkpoint(path))


def _head_files() -> tuple[bytes, bytes]:
    from safetensors.numpy import save

    weight, bias = np.ones((1, 8), np.float32), np.zeros(1, np.float32)
    npz = io.BytesIO()
    np.savez(npz, weight=weight, bias=bias)
    return npz.getvalue(), save({"weight": weight, "bias": bias})


HEAD_NPZ, HEAD_SAFETENSORS = _head_files()


@FUZZ
@given(st.booleans(), mutated(HEAD_NPZ, 4), mutated(HEAD_SAFETENSORS, 4))
@example(True, HEAD_NPZ, HEAD_SAFETENSORS)
@example(False, HEAD_NPZ, HEAD_SAFETENSORS)
def test_linear_head_files(npz, npz_data, safetensors_data):
    from audit.fairness.classifiers import load_classifier

    path = _file("head.npz", npz_data) if npz else _file("head.safetensors", safetensors_data)
    head = _expect_input_error_only(lambda: load_classifier(path, 8))
    if head is not None:
        import torch

        assert torch.isfinite(head.margin(torch.ones(2, 8))).all()


# ------------------------------------------------------------------------------------------
# Stores: manifests and .npy files
# ------------------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


NPY = _npy(np.arange(40, dtype=np.float32).reshape(10, 4))
MANIFEST = {
    "format": "msae-audit/embeddings", "version": 1, "model": "m", "pretrained": None,
    "modality": "image", "dim": 4, "count": 10, "normalized": False, "dtype": "float32",
    "shards": [{"file": "embeddings-00000.npy", "rows": 6}, {"file": "embeddings-00001.npy", "rows": 4}],
}  # fmt: skip


def _check_store(store) -> None:
    x = store.read()
    assert x.shape == (store.count, store.dim) and x.dtype == np.float32
    if store.count:
        rows = np.array([store.count - 1, 0, store.count - 1])
        np.testing.assert_array_equal(store.take(rows), x[rows])
    _expect_input_error_only(store.check_finite)


@FUZZ
@given(
    st.one_of(perturbed(MANIFEST).map(lambda d: json.dumps(d).encode()),
              files_like(json.dumps(MANIFEST).encode())),
    st.booleans(),
)  # fmt: skip
@example(json.dumps(MANIFEST).encode(), True)
def test_store_manifests(manifest, with_metadata):
    import shutil

    from audit.store import open_store

    root = _DIR / "store"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    (root / "embeddings-00000.npy").write_bytes(_npy(x[:6]))
    (root / "embeddings-00001.npy").write_bytes(_npy(x[6:]))
    (root / "manifest.json").write_bytes(manifest)
    if with_metadata:
        pd.DataFrame({"id": range(10)}).to_csv(root / "metadata.csv", index=False)
    store = _expect_input_error_only(lambda: open_store(root))
    if store is not None:
        assert store.count == int(store.manifest["count"])
        _check_store(store)


@FUZZ
@given(
    st.one_of(
        mutated(NPY, 4), mutated(_npy(np.ones((3, 2), np.float16)), 3), st.binary(max_size=200)
    )
)
@example(NPY)
def test_npy_store_reader(data):
    from audit.store import open_store

    store = _expect_input_error_only(lambda: open_store(_file("x.npy", data)))
    if store is not None:
        _check_store(store)


@pytest.mark.parametrize("profile", ["fuzz-ci", "fuzz"])
def test_profiles_exist(profile):
    assert settings.get_profile(profile).deadline is None


# ------------------------------------------------------------------------------------------
# The valid files the fuzzing starts from
# ------------------------------------------------------------------------------------------


def _celeba_seed(kaggle: bool):
    from audit.data.celeba import read_celeba

    root = _DIR / ("celeba-kaggle-seed" if kaggle else "celeba-seed")
    root.mkdir(parents=True, exist_ok=True)
    names = ("list_attr_celeba", "list_eval_partition")
    files = (ATTR_CSV, PART_CSV) if kaggle else (ATTR, PART)
    for name, data in zip(names, files, strict=True):
        (root / f"{name}.{'csv' if kaggle else 'txt'}").write_bytes(data)
    return read_celeba(root, require_images=False)


def _sae_weights_seed():
    from audit.sae import load_sae

    folder = _DIR / "sae-seed"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SAE_DIR_CONFIG))
    (folder / "sae.safetensors").write_bytes(SAE_WEIGHTS)
    return load_sae(folder)


def _store_seed():
    from audit.store import open_store

    root = _DIR / "store-seed"
    root.mkdir(parents=True, exist_ok=True)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    (root / "embeddings-00000.npy").write_bytes(_npy(x[:6]))
    (root / "embeddings-00001.npy").write_bytes(_npy(x[6:]))
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    return open_store(root)


def _seed_readers():
    from audit.cli.options import read_config_file
    from audit.cli.train import TrainOptions
    from audit.concepts import load_bank, read_vocabulary_file
    from audit.encoders import list_images
    from audit.fairness import parse_gate, parse_result
    from audit.fairness.classifiers import load_classifier
    from audit.fairness.gate import load_gate
    from audit.sae.base import SAEConfig
    from audit.sae.reference import load_reference_checkpoint
    from audit.store import open_store, read_labels_csv

    return {
        "vocabulary": lambda: read_vocabulary_file(_file("seed/v.txt", VOCAB)),
        "labels": lambda: read_labels_csv(_file("seed/l.csv", LABELS)),
        "celeba": lambda: _celeba_seed(False),
        "celeba-kaggle": lambda: _celeba_seed(True),
        "gate": lambda: load_gate(_file("seed/gate.yaml", GATE_TEXT)),
        "saved result and gate": lambda: (parse_result(_saved_result()), parse_gate(GATE)),
        "image manifest": lambda: list_images(_file("seed/m.csv", IMAGE_MANIFEST)),
        "training config": lambda: read_config_file(
            _file("seed/c.yaml", yaml.safe_dump(TRAIN_CONFIG).encode()), TrainOptions
        ),
        "bank": lambda: load_bank(_file("seed/bank.yaml", yaml.safe_dump(BANK).encode())),
        "bank v2": lambda: load_bank(_file("seed/bank2.yaml", yaml.safe_dump(BANK_V2).encode())),
        "sae config": lambda: SAEConfig.from_json(SAE_CONFIG),
        "sae weights": _sae_weights_seed,
        "reference checkpoint": lambda: load_reference_checkpoint(
            _file("seed/16_8_TopKReLU_4_False_False_0.0_cc3m.pt", REFERENCE_PT)
        ),
        "head npz": lambda: load_classifier(_file("seed/head.npz", HEAD_NPZ), 8),
        "head safetensors": lambda: load_classifier(
            _file("seed/head.safetensors", HEAD_SAFETENSORS), 8
        ),
        "store": _store_seed,
        "npy": lambda: open_store(_file("seed/x.npy", NPY)),
    }


@pytest.mark.parametrize("name", sorted(_seed_readers()))
def test_the_valid_files_the_fuzzing_starts_from_are_accepted(name):
    """Each fuzz test runs its unmutated valid file as an explicit example, so its checks of a
    parsed result always run at least once; that only bites if the file really parses (a
    parser that refused every input would otherwise pass every fuzz test)."""
    assert _seed_readers()[name]() is not None
