"""``msae-audit models``: the paper's released SAEs, loadable as ``--sae hf:…``, and which are
already in the local Hugging Face cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import IDLE_DEVICE_HELP, command_options, device_option, option
from audit.fileio import write_json
from audit.sae import hub


def release_rows() -> list[dict[str, Any]]:
    """One record per known release: its ``--sae`` value, settings and cached copy (if any)."""
    rows = []
    for release in hub.RELEASES:
        s = release.settings()
        cached = hub.cached_file(release.ref)
        rows.append(
            {
                "name": release.name,
                "sae": str(release.short_ref),
                "file": str(release.ref),
                "description": release.description,
                "clip_model": s.get("embedding_model"),
                "pretrained": s.get("pretrained"),
                "d_in": s["d_in"],
                "n_latents": s["n_latents"],
                "expansion": s["n_latents"] / s["d_in"],
                "k_levels": list(_k_levels(s)),
                "weighting": s.get("weighting"),
                "cached": str(cached) if cached else None,
            }
        )
    return rows


def _k_levels(settings: dict[str, Any]) -> tuple[int, ...]:
    from audit.sae.matryoshka import matryoshka_k_list

    if settings["arch"] == "matryoshka":
        return matryoshka_k_list(settings["n_latents"], settings["k_min"])
    return (settings["k"],) if settings.get("k") else ()


@dataclass(frozen=True)
class ModelsOptions:
    json_out: Path | None = option(
        None, "--json", help="Also write the list as JSON here.", shown="none: not written"
    )
    device: str = device_option(help=IDLE_DEVICE_HELP)


@app.command("models", rich_help_panel="Models")
@command_options(ModelsOptions)
def models_command(opts: ModelsOptions) -> None:
    """List the paper's released SAEs and which are cached.

    Pass a row's `--sae` value to any command; `HF_HOME` / `HF_HUB_CACHE` choose the cache,
    `HF_HUB_OFFLINE=1` stays offline."""
    rows = release_rows()
    table = Table(title="Released SAEs (Zaigrajew et al., ICML 2025)", title_justify="left")
    for name in ("name", "CLIP model", "d→n", "k levels", "α", "cached"):
        table.add_column(name, justify="right" if name == "d→n" else "left", no_wrap=True)
    for row in rows:
        ks = row["k_levels"]
        levels = (
            ", ".join(map(str, ks)) if len(ks) <= 3 else f"{ks[0]} … {ks[-1]}\n{len(ks)} levels"
        )
        table.add_row(
            escape(row["name"]),
            f"{row['clip_model']}\n{row['pretrained']}",
            f"{row['d_in']}→{row['n_latents']}\n{row['expansion']:g}×",
            levels,
            (row["weighting"] or "-").upper(),
            "yes" if row["cached"] else "no",
        )
    console.print(table)
    # What to paste after --sae can be long: one per line, never cut to the table's width.
    for row in rows:
        console.print(
            f"[bold]{escape(row['name'])}[/] ({escape(row['description'])}):\n"
            f"  --sae {escape(row['sae'])}",
            soft_wrap=True,
        )
    vocab = " ".join(str(hub.HubRef(repo, path)) for repo, path in hub.VOCABULARIES.items())
    console.print(f"vocabulary: --vocab {escape(vocab)}", soft_wrap=True)
    console.print(f"cache: {escape(str(hub.hub_cache_dir()))}", soft_wrap=True, style="dim")
    json_out = opts.json_out
    if json_out is not None:
        payload = {
            "schema": "msae-audit/models",
            "cache": str(hub.hub_cache_dir()),
            "releases": rows,
        }
        write_json(json_out, payload)
        err_console.print(f"wrote {json_out}")
