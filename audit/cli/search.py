"""``msae-audit search``: similarity search with concept manipulation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.table import Table
from rich.text import Text

from audit.cli.app import app, console, err_console
from audit.cli.options import command_options, device_option, option, quiet_option
from audit.cli.progress import Bars
from audit.concepts import load_bank
from audit.device import resolve_device
from audit.errors import InputError, first_line
from audit.fileio import write_json, write_text
from audit.sae import load_sae, sae_fingerprint
from audit.search import DEFAULT_CHUNK_ROWS, check_gallery, parse_edits, run_search
from audit.store import open_store

_ONE_QUERY = "none; give one of --image, --text, --row"


@dataclass(frozen=True)
class SearchOptions:
    gallery: Path = option(
        None, "--gallery", help="Embedding store directory or .npy file to search.", required=True
    )
    labels: Path | None = option(
        None,
        "--labels",
        help="Row-aligned CSV naming the gallery's rows ('id', 'path' columns; for a .npy).",
        shown="the store's metadata.csv",
    )
    sae: Path = option(None, "--sae", help="SAE directory.", required=True)
    bank: str = option(None, "--bank", help="Concept bank name or path.", required=True)
    image: Path | None = option(
        None, "--image", help="Query image (embedded with the gallery's CLIP).", shown=_ONE_QUERY
    )
    text: str | None = option(
        None, "--text", help="Query text (embedded with the gallery's CLIP).", shown=_ONE_QUERY
    )
    row: int | None = option(
        None, "--row", help="Use gallery row N as the query.", shown=_ONE_QUERY
    )
    set_: list[str] = option(
        [], "--set", help='Set a concept: "NAME=VALUE" (in units of its typical strength).'
    )
    remove: list[str] = option([], "--remove", help="Remove a concept (set it to 0).")
    top: int = option(20, "--top", min=1, help="Neighbours to return.")
    model: str | None = option(
        None, "--model", help="CLIP model for --image/--text.", shown="the gallery's"
    )
    pretrained: str | None = option(
        None, "--pretrained", help="CLIP weights for --image/--text.", shown="the gallery's"
    )
    json_out: Path | None = option(
        None, "--json", help="Write the results as JSON.", shown="not written"
    )
    html_out: Path | None = option(
        None, "--html", help="Write a self-contained HTML gallery.", shown="not written"
    )
    chunk_rows: int = option(
        DEFAULT_CHUNK_ROWS, "--chunk-rows", min=1, help="Gallery rows per similarity chunk."
    )
    device: str = device_option()
    quiet: bool = quiet_option()


@app.command(rich_help_panel="Explore")
@command_options(SearchOptions)
def search(opts: SearchOptions) -> None:
    """Find gallery neighbours of a query after turning named concepts up or down."""
    image, text, row = opts.image, opts.text, opts.row
    sources = [s for s in (image, text, row) if s is not None]
    if len(sources) != 1:
        raise InputError("give exactly one query: --image FILE, --text TEXT or --row N")
    store = open_store(opts.gallery, opts.labels)
    torch_device = resolve_device(opts.device)
    model_sae = load_sae(opts.sae, device=torch_device)
    concept_bank = load_bank(opts.bank)
    concept_bank.check_sae(sae_fingerprint(model_sae.cpu()), opts.sae)
    model_sae.to(torch_device)
    check_gallery(store, model_sae, concept_bank)
    parse_edits(concept_bank, opts.set_, opts.remove)  # unknown names fail before a CLIP loads
    query, query_info = _query_embedding(
        store, image, text, row, opts.model, opts.pretrained, opts.device
    )
    if not opts.set_ and not opts.remove:
        err_console.print("note: no --set/--remove given; showing plain neighbours")
    with Bars(opts.quiet) as bars:
        result = run_search(
            model_sae,
            store,
            concept_bank,
            query,
            opts.set_,
            opts.remove,
            top=opts.top,
            chunk_rows=opts.chunk_rows,
            exclude_row=row,
            progress=bars,
        )
    result["query"] = query_info
    console.print(_table("before the edit", result["before"], result["edits"]))
    console.print(_table("after the edit", result["after"], result["edits"]))
    if opts.json_out is not None:
        write_json(opts.json_out, result)
        err_console.print(f"wrote {opts.json_out}")
    if opts.html_out is not None:
        from audit.report.search import render_search_html

        write_text(opts.html_out, render_search_html(result))
        err_console.print(f"wrote {opts.html_out}")


def _query_embedding(store, image, text, row, model, pretrained, device):  # type: ignore[no-untyped-def]
    if row is not None:
        if not 0 <= row < store.count:
            raise InputError(f"--row {row} is out of range (the gallery has {store.count} rows)")
        return torch.from_numpy(store.take([row])), {
            "kind": "row",
            "row": int(row),
            **_row_info(store, row),
        }
    from audit.encoders import load_clip

    model_name = model or store.model
    if not model_name:
        raise InputError("the gallery records no CLIP model; pass --model and --pretrained")
    weights = pretrained if pretrained is not None else store.pretrained
    clip = load_clip(model_name, weights, device=device)
    if store.model and clip.model_id != store.model:
        raise InputError(
            f"the query would be embedded with {clip.model_id!r} but the gallery holds {store.model!r} embeddings"
        )
    if store.pretrained and clip.pretrained and clip.pretrained != store.pretrained:
        raise InputError(
            f"the query would be embedded with weights {clip.pretrained!r} but the gallery holds "
            f"embeddings from {store.pretrained!r}"
        )
    if image is not None:
        vector = _embed_image(clip, image)
        info = {"kind": "image", "path": str(image)}
    else:
        if not text.strip():
            raise InputError("--text is empty")
        vector, _ = clip.encode_text_batch([text])
        info = {"kind": "text", "text": text}
    if store.normalized:
        vector = vector / np.maximum(np.linalg.norm(vector, axis=1, keepdims=True), 1e-12)
    return torch.from_numpy(np.asarray(vector, dtype=np.float32)), info


def _embed_image(clip, path: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image, UnidentifiedImageError

    from audit.encoders import to_rgb

    if not path.exists():
        raise InputError(f"query image not found: {path}")
    try:
        with Image.open(path) as img:
            tensor = clip.preprocess(to_rgb(img)).unsqueeze(0)
    except Image.DecompressionBombError as exc:  # not an OSError
        raise InputError(f"cannot read query image {path}: refused, {first_line(exc)}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read query image {path}: {first_line(exc)}") from exc
    return clip.encode_image_batch(tensor)


def _row_info(store, row: int) -> dict:  # type: ignore[no-untyped-def]
    if store.metadata is None:
        return {}
    record = store.metadata.iloc[row]
    return {
        k: record[k].item() if hasattr(record[k], "item") else record[k]
        for k in ("id", "path")
        if k in store.metadata.columns
    }


def _table(title: str, rows: list[dict], edits: list[dict]) -> Table:
    table = Table(title=f"Neighbours {title}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("row", justify="right")
    table.add_column("id / path", overflow="fold")
    table.add_column("similarity", justify="right")
    for edit in edits:
        table.add_column(Text(edit["name"]), justify="right")
    for item in rows:
        label = str(item.get("path") or item.get("id") or "")
        cells = [str(item["rank"]), str(item["row"]), label, f"{item['similarity']:.4f}"]
        cells += [f"{item['activations'][e['name']]:.3f}" for e in edits]
        table.add_row(*(Text(c) for c in cells))  # Text: file names are not rich markup
    return table
