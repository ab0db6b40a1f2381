"""``msae-audit audit``, ``celeba`` and ``check``: the bias audit and the CI gate.

Exit codes: 0 every gate passes, 1 a gate failed, 2 usage / config / input error, 3 integrity
failure (the SAE or the classifier cannot be trusted on this data), 4 internal error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from audit.cli.app import app, console, err_console
from audit.cli.options import IDLE_DEVICE_HELP
from audit.cli.progress import Bars
from audit.device import check_device_name
from audit.errors import InputError, check_seed
from audit.fairness.config import AuditSettings, GateConfig

DEFAULT_REPORTS = Path("reports")


def _setting(name: str, flag: str, **typer_kwargs: Any) -> Any:
    """An option whose default and help are the audit setting's (stated once, in the library)."""
    return typer.Option(
        AuditSettings.default(name), flag, help=AuditSettings.help(name), **typer_kwargs
    )


def _report(flag: str, what: str, command: str, suffix: str) -> Any:
    return typer.Option(None, flag, help=what, show_default=f"{DEFAULT_REPORTS}/{command}{suffix}")


_SAE = typer.Option(..., "--sae", help="SAE directory (sae.safetensors + config.json).")
_BANK = typer.Option(
    ..., "--bank", help="Concept bank: a name (./concept_banks, built-ins) or a path."
)
_CLASSIFIER = typer.Option(
    None,
    "--classifier",
    help="'probe' (logistic regression fit on the train split), a linear head (.safetensors/.npz "
    "with weight \\[C, d], bias \\[C]), a TorchScript file on embeddings (runs the code it "
    "contains) or, with --classifier-input image, your model on the images (TorchScript or "
    ".pt2).",
    show_default="required unless --predictions",
)
_CLASSIFIER_INPUT = _setting("classifier_input", "--classifier-input")
_PREDICTIONS = typer.Option(
    None,
    "--predictions",
    help="Your model's decisions instead of a model: CSV with 'id' (the store's metadata id) and "
    "'score' (logit or probability) or 'label' (0/1).",
    show_default="none",
)
_IMAGE_SIZE = typer.Option(
    None,
    "--image-size",
    help=AuditSettings.help("image_size"),
    show_default="the images as they are (a .pt2 with a fixed size: its size)",
)
_WORKERS = _setting("workers", "--workers")
_IMAGE_BATCH = _setting("image_batch_size", "--image-batch-size")
_MARKDOWN = typer.Option(
    None,
    "--markdown",
    help="Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set).",
    show_default="none",
)
_GATE = typer.Option(
    None,
    "--gate",
    help="Gate file (YAML): thresholds that decide the exit code. Without one nothing is "
    "judged (verdict ungated, exit 0); when every gated check is skipped the verdict is "
    "inconclusive (exit 1 unless the gate says allow_skipped: true).",
    show_default=f"none: verdict ungated, integrity thresholds "
    f"{GateConfig.min_cosine:g} (cosine) and {GateConfig.min_agreement:g} (agreement)",
)
_SEED = _setting("seed", "--seed", callback=check_seed)
_DEVICE = _setting("device", "--device", callback=check_device_name)
_ABLATION = _setting("ablation", "--ablation")
_SPLIT = _setting("split", "--split")
_CLASS_NAMES = typer.Option(
    None,
    "--class-names",
    help=AuditSettings.help("class_names").split(" Default:")[0] + " Repeat or comma-separate.",
    show_default="the label values",
)
_TOP = typer.Option(10, "--top", help="Concepts shown in the terminal table.")
_QUIET = typer.Option(
    False,
    "--quiet",
    "-q",
    help="No progress output (bars on a terminal, lines in a log).",
    show_default="off",
)


def _classifier_arg(classifier: str | None, predictions: Path | None) -> str:
    """``--classifier`` or ``--predictions`` (exactly one)."""
    if predictions is not None and classifier is not None:
        raise InputError("give --classifier or --predictions, not both")
    if predictions is not None:
        if Path(predictions).suffix.lower() != ".csv":
            raise InputError(f"--predictions takes a .csv file, got {predictions}")
        return str(predictions)
    if classifier is None:
        raise InputError("--classifier (or --predictions) is required")
    return classifier


def _own_settings(
    classifier_input: str,
    predictions: Path | None,
    image_size: int | None,
    workers: int,
    image_batch_size: int,
) -> str:
    """The own-model options, checked together. A predictions file is read as decisions: no
    --classifier-input beyond the default, and no --image-size (nothing is run on images)."""
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}")
    if image_batch_size < 1:
        raise InputError(f"--image-batch-size must be positive, got {image_batch_size}")
    if predictions is not None and classifier_input != "raw":
        raise InputError("--classifier-input does not apply to --predictions")
    if predictions is not None and image_size is not None:
        raise InputError("--image-size does not apply to --predictions")
    return classifier_input


@dataclass(frozen=True)
class _Inputs:
    """The files an audit reads."""

    embeddings: Path
    labels: Path | pd.DataFrame | None
    sae: Path
    bank: str
    classifier: str


def _execute(
    command: str,
    inputs: _Inputs,
    settings: AuditSettings,
    reports: dict[str, Path | None],
    gate: Path | None,
    top: int,
    quiet: bool,
) -> None:
    """Run the audit, write its reports, print its tables; the exit code is the verdict."""
    from audit.fairness import load_gate
    from audit.report import audit_files
    from audit.report.terminal import render_terminal

    gate_cfg = load_gate(gate) if gate is not None else None  # a bad gate file fails fast (exit 2)
    with Bars(quiet) as bars:
        outcome = audit_files(
            inputs.embeddings, sae=inputs.sae, bank=inputs.bank, classifier=inputs.classifier,
            labels=inputs.labels, target=settings.target, spurious=settings.spurious,
            out_dir=DEFAULT_REPORTS, stem=command, json_path=reports["json"],
            html_path=reports["html"], junit_path=reports["junit"],
            markdown_path=reports["markdown"], gate=gate_cfg, settings=settings, progress=bars,
        )  # fmt: skip
    render_terminal(outcome.audit, console, top=top)
    for kind, path in outcome.paths.items():
        err_console.print(f"{kind}: {path}", markup=False, highlight=False)
    raise typer.Exit(outcome.exit_code)


@app.command("audit", rich_help_panel="Audit")
def audit_command(
    embeddings: Path = typer.Option(
        ..., "--embeddings", help="Embedding store directory or .npy file."
    ),
    labels: Path = typer.Option(
        None,
        "--labels",
        help="Row-aligned labels CSV.",
        show_default="the store's metadata.csv",
    ),
    target: str = typer.Option(
        ..., "--target", help="Binary target column (the classifier's label)."
    ),
    spurious: str = typer.Option(
        ...,
        "--spurious",
        help="Attribute column the groups are split by, or concept:NAME\\[>T] to split them by "
        "a concept of the bank: active where its activation exceeds T (default: Otsu's cut of "
        "its activations).",
    ),
    sae: Path = _SAE,
    bank: str = _BANK,
    classifier: str = _CLASSIFIER,
    classifier_input: str = _CLASSIFIER_INPUT,
    predictions: Path = _PREDICTIONS,
    image_size: int = _IMAGE_SIZE,
    image_batch_size: int = _IMAGE_BATCH,
    workers: int = _WORKERS,
    json_out: Path = _report("--json", "Audit JSON (the source of truth).", "audit", ".json"),
    html_out: Path = _report("--html", "Self-contained HTML report.", "audit", ".html"),
    junit_out: Path = _report("--junit", "JUnit XML, one test case per check.", "audit", ".xml"),
    markdown_out: Path = _MARKDOWN,
    gate: Path = _GATE,
    seed: int = _SEED,
    device: str = _DEVICE,
    ablation: str = _ABLATION,
    split: str = _SPLIT,
    class_names: list[str] | None = _CLASS_NAMES,
    top: int = _TOP,
    quiet: bool = _QUIET,
) -> None:
    """Audit a classifier on any embeddings + labels: groups, concept reliance, the gate."""
    classifier_arg = _classifier_arg(classifier, predictions)
    own_input = _own_settings(classifier_input, predictions, image_size, workers, image_batch_size)
    _execute(
        "audit",
        _Inputs(embeddings, labels, sae, bank, classifier_arg),
        AuditSettings(target, spurious, seed=seed, ablation=ablation, split=split,
                      classifier_input=own_input,
                      device=device, image_size=image_size, workers=workers,
                      image_batch_size=image_batch_size,
                      class_names=tuple(class_names or ())),
        {"json": json_out, "html": html_out, "junit": junit_out, "markdown": markdown_out},
        gate, top, quiet,
    )  # fmt: skip


def _embed_celeba_cached(
    root: Path, model: str | None, pretrained: str | None, device: str, quiet: bool = False
) -> Path:
    """Embed CelebA with open_clip into ``<cache>/celeba/<key>/`` and return that store.

    The key covers the CelebA folder, the model, the weights and the size and time of the
    label files, so a second audit of the same data reuses the store; an interrupted
    embedding resumes (the store writer is resumable)."""
    import hashlib
    import json

    from audit.cli.embed import embed_celeba
    from audit.data.celeba import EXPECTED_TREE
    from audit.fileio import cache_root

    if not model:
        raise InputError(
            "the SAE records no embedding model; pass --model and --pretrained "
            "(or --embeddings STORE from `msae-audit embed celeba`)"
        )
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(f"CelebA root not found: {root}", details=EXPECTED_TREE)
    labels = sorted(
        (str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in [*root.glob("*"), *root.glob("*/*")]
        if f.is_file() and f.suffix.lower() in (".txt", ".csv")
    )
    key_source = {"root": str(root), "model": model, "pretrained": pretrained, "labels": labels}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:20]
    store = cache_root() / "celeba" / key
    if (store / "manifest.json").exists():
        err_console.print(f"using the CelebA embeddings cached in {store}", markup=False)
        return store
    err_console.print(
        f"embedding CelebA with {model} into {store} (reused by later audits)", markup=False
    )
    embed_celeba(root, model, pretrained, store, device=device, quiet=quiet)
    return store


def celeba_labels(root: Path, store_path: Path, ids: Path | None = None) -> pd.DataFrame:
    """CelebA's attributes, split and image paths aligned to a store's rows by ``id`` (from its
    metadata.csv, or from ``ids``, a row-aligned CSV); a plain ``.npy`` without ids holds
    CelebA's rows in the order of its attribute list (the order `embed celeba` writes)."""
    from audit.data.celeba import read_celeba
    from audit.store import open_store

    # Absolute image paths: an image model finds each row's image wherever the store is.
    table = read_celeba(Path(root).resolve(), require_images=False).table
    store = open_store(store_path, ids)
    if store.metadata is None and Path(store_path).suffix == ".npy":
        if store.count != len(table):
            raise InputError(
                f"{store_path}: a plain .npy without --labels must hold every CelebA image in the "
                f"order of its attribute list ({len(table)} rows), got {store.count} rows; give "
                "--labels CSV with an 'id' column of CelebA file names"
            )
        listed = table.reset_index(drop=True)
        listed.attrs["source"] = f"CelebA attributes and split under {root}, in list order"
        return listed
    if store.metadata is None or "id" not in store.metadata.columns:
        raise InputError(
            f"{store_path}: the store's metadata.csv needs an 'id' column with CelebA file names "
            "(make it with `msae-audit embed celeba`)"
        )
    ids = store.metadata["id"].astype(str)
    indexed = table.assign(id=table["id"].astype(str)).set_index("id")
    missing = ~ids.isin(indexed.index)
    if missing.any():
        raise InputError(
            f"{int(missing.sum())} store rows have ids not in CelebA under {root} "
            f"(first: {ids[missing].iloc[0]!r})"
        )
    if ids.duplicated().any():
        raise InputError(
            f"{store_path}: duplicate ids in metadata.csv (first: {ids[ids.duplicated()].iloc[0]!r})"
        )
    aligned = indexed.loc[ids.to_numpy()].reset_index()
    aligned.attrs["source"] = f"CelebA attributes and split under {root}, aligned by id"
    return aligned


@app.command("celeba", rich_help_panel="Audit")
def celeba_command(
    root: Path = typer.Option(
        ..., "--root", help="CelebA folder (official, torchvision or Kaggle layout)."
    ),
    sae: Path = _SAE,
    bank: str = _BANK,
    classifier: str = _CLASSIFIER,
    classifier_input: str = _CLASSIFIER_INPUT,
    predictions: Path = _PREDICTIONS,
    image_size: int = _IMAGE_SIZE,
    image_batch_size: int = _IMAGE_BATCH,
    workers: int = _WORKERS,
    target: str = typer.Option(
        "Male", "--target", help="CelebA attribute the classifier predicts."
    ),
    spurious: str = typer.Option(
        "Blond_Hair", "--spurious", help="CelebA attribute the groups are split by."
    ),
    model: str = typer.Option(
        None, "--model", help="open_clip model.", show_default="the SAE's model"
    ),
    pretrained: str = typer.Option(
        None, "--pretrained", help="open_clip weights.", show_default="the SAE's"
    ),
    embeddings: Path = typer.Option(
        None,
        "--embeddings",
        help="A store from `msae-audit embed celeba` (skips embedding), or a .npy of its rows.",
        show_default="embed the images (cached)",
    ),
    labels: Path = typer.Option(
        None,
        "--labels",
        help="Row-aligned CSV whose 'id' column names each row's CelebA image (for a .npy).",
        show_default="the store's metadata.csv; a .npy: CelebA's list order",
    ),
    json_out: Path = _report("--json", "Audit JSON (the source of truth).", "celeba", ".json"),
    html_out: Path = _report("--html", "Self-contained HTML report.", "celeba", ".html"),
    junit_out: Path = _report("--junit", "JUnit XML, one test case per check.", "celeba", ".xml"),
    markdown_out: Path = _MARKDOWN,
    gate: Path = _GATE,
    seed: int = _SEED,
    device: str = _DEVICE,
    ablation: str = _ABLATION,
    split: str = _SPLIT,
    class_names: list[str] | None = _CLASS_NAMES,
    top: int = _TOP,
    quiet: bool = _QUIET,
) -> None:
    """Audit a CelebA classifier (default: Male across Blond_Hair) on CelebA's test split."""
    from audit.fairness.gate import load_gate

    if gate is not None:
        load_gate(gate)  # a bad gate file is reported before any heavy work
    # Bad options are reported before CelebA is embedded (minutes), as a bad gate is.
    classifier_arg = _classifier_arg(classifier, predictions)
    own_input = _own_settings(classifier_input, predictions, image_size, workers, image_batch_size)
    if labels is not None and embeddings is None:
        raise InputError("--labels names the rows of --embeddings; give both")
    if embeddings is None:
        from audit.sae import load_sae

        cfg = load_sae(sae).cfg
        embeddings = _embed_celeba_cached(
            root, model or cfg.embedding_model, pretrained or cfg.pretrained, device, quiet
        )
    _execute(
        "celeba",
        _Inputs(
            embeddings, celeba_labels(root, embeddings, labels), sae, bank, classifier_arg,
        ),
        AuditSettings(target, spurious, seed=seed, ablation=ablation, split=split,
                      classifier_input=own_input,
                      device=device, image_size=image_size, workers=workers,
                      image_batch_size=image_batch_size,
                      class_names=tuple(class_names or ())),
        {"json": json_out, "html": html_out, "junit": junit_out, "markdown": markdown_out},
        gate, top, quiet,
    )  # fmt: skip


@app.command("check", rich_help_panel="Audit")
def check_command(
    results: Path = typer.Argument(..., help="An audit JSON written by `audit` or `celeba`."),
    config: Path = typer.Option(..., "--config", help="Gate file (YAML)."),
    json_out: Path = typer.Option(
        None, "--json", help="Write the re-judged JSON here.", show_default="not written"
    ),
    junit_out: Path = typer.Option(
        None,
        "--junit",
        help="Write JUnit XML for the re-judged checks.",
        show_default="not written",
    ),
    markdown_out: Path = _MARKDOWN,
    device: str = typer.Option(
        "auto", "--device", help=IDLE_DEVICE_HELP, callback=check_device_name
    ),
) -> None:
    """Re-judge saved audit results against a gate file; the exit code is the verdict."""
    from audit.fairness import load_gate, parse_result, rejudge
    from audit.fileio import read_json, refuse_overwriting
    from audit.report import write_reports
    from audit.report.terminal import checks_table, verdict_panel

    outputs = {"--json": json_out, "--junit": junit_out, "--markdown": markdown_out}
    refuse_overwriting(outputs, [config])
    # The re-judged JSON may replace the results it re-judges; JUnit or Markdown may not.
    refuse_overwriting({k: v for k, v in outputs.items() if k != "--json"}, [results])
    gate = load_gate(config)
    result, notes = rejudge(parse_result(read_json(results, "audit results")), gate)
    # Written before anything is printed (a closed stdout must not lose them), and whenever
    # $GITHUB_STEP_SUMMARY is set: the re-judged verdict is what a CI step summary should show.
    if json_out or junit_out or markdown_out or os.environ.get("GITHUB_STEP_SUMMARY"):
        write_reports(result, {"json": json_out, "junit": junit_out, "markdown": markdown_out})
    console.print(verdict_panel(result))
    console.print(checks_table(result))
    for note in notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    raise typer.Exit(result.exit_code)
