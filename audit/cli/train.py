"""``msae-audit train``: fit an SAE on an embedding store.

Under ``torchrun --nproc-per-node N -m audit train …`` the same command trains data-parallel
(DDP, NCCL on GPUs, gloo on CPUs); only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from audit.cli.app import app, console, err_console, load_yaml_config, pick, progress_enabled
from audit.distributed import distributed_session, env_rank
from audit.errors import InputError
from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.base import expansion_to_latents
from audit.sae.train import TrainConfig, train_sae
from audit.store import EmbeddingStore, open_store

_YAML_KEYS = {
    "embeddings",
    "labels",
    "arch",
    "expansion",
    "n_latents",
    "k_min",
    "k",
    "l1",
    "weighting",
    "loss",
    "aux_k",
    "aux_coef",
    "epochs",
    "batch_size",
    "lr",
    "max_steps",
    "seed",
    "device",
    "out",
    "checkpoint_every",
    "data_on_device",
    "stream_chunk_rows",
    "stream_buffer_chunks",
    "stream_shuffle",
    "mean_center",
    "decay_fraction",
    "dead_window",
}


@app.command(rich_help_panel="Models")
def train(
    embeddings: Path = typer.Option(
        None, "--embeddings", help="Embedding store directory or .npy file."
    ),
    arch: str = typer.Option(
        None, "--arch", help="matryoshka | topk | batchtopk | relu  [default: matryoshka]"
    ),
    expansion: float = typer.Option(
        None, "--expansion", help="n_latents = expansion × d  [default: 8]"
    ),
    n_latents: int = typer.Option(
        None, "--n-latents", help="Number of latents (overrides --expansion)."
    ),
    k_min: int = typer.Option(
        None, "--k-min", help="Matryoshka: smallest k; the k-list doubles up to n  [default: 64]"
    ),
    weighting: str = typer.Option(
        None, "--weighting", help="Matryoshka level weights: uw | rw  [default: uw]"
    ),
    k: int = typer.Option(None, "--k", help="TopK / BatchTopK: active latents per sample."),
    l1: float = typer.Option(None, "--l1", help="ReLU: L1 coefficient λ  [default: 0.003]"),
    loss: str = typer.Option(None, "--loss", help="mse | nmse  [default: mse]"),
    aux_k: int = typer.Option(
        None, "--aux-k", help="AuxK latents to revive dead ones (0 = off)  [default: 0]"
    ),
    aux_coef: float = typer.Option(None, "--aux-coef", help="AuxK loss weight  [default: 1/32]"),
    epochs: int = typer.Option(None, "--epochs", help="Passes over the data  [default: 10]"),
    batch_size: int = typer.Option(None, "--batch-size", help="Samples per step  [default: 4096]"),
    lr: float = typer.Option(
        None, "--lr", help="AdamW learning rate  [default: per architecture, as the paper's code]"
    ),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    seed: int = typer.Option(
        None, "--seed", help="Seed for initialisation and data order  [default: 0]"
    ),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda  [default: auto]"),
    checkpoint_every: int = typer.Option(
        None, "--checkpoint-every", help="Steps between checkpoints  [default: 500]"
    ),
    data_on_device: str = typer.Option(
        None,
        "--data-on-device",
        help="yes: hold the data on the device; no: stream it from the store's memory map; "
        "auto: yes when it fits in half the free device memory  [default: auto]",
    ),
    stream_chunk_rows: int = typer.Option(
        None, "--stream-chunk-rows", help="Streaming: rows per chunk read  [default: 65536]"
    ),
    stream_buffer_chunks: int = typer.Option(
        None,
        "--stream-buffer-chunks",
        help="Streaming: chunks shuffled together; memory ≈ chunk rows × chunks × d × 4 bytes  "
        "[default: 4]",
    ),
    stream_shuffle: str = typer.Option(
        None,
        "--stream-shuffle",
        help="Streaming: buffer (shuffle inside the buffer, forward reads) | global (the "
        "in-memory order, random reads)  [default: buffer]",
    ),
    mean_center: bool = typer.Option(
        None, "--mean-center/--no-mean-center", help="Subtract the training mean  [default: on]"
    ),
    config: Path = typer.Option(None, "--config", help="YAML file with any of these options."),
    out: Path = typer.Option(None, "--out", help="Output SAE directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished model in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a Matryoshka (or TopK, BatchTopK, ReLU) sparse autoencoder on embeddings."""
    cfg = load_yaml_config(config, _YAML_KEYS)
    embeddings = pick(embeddings, cfg, "embeddings", None, str)
    out = pick(out, cfg, "out", None, str)
    if embeddings is None:
        raise InputError("--embeddings is required (a store directory or a .npy file)")
    if out is None:
        raise InputError("--out is required (the SAE directory to write)")
    out = Path(out)
    if (out / "sae.safetensors").exists() and not resume and not overwrite:
        raise InputError(
            f"{out} already holds a model (use --overwrite to replace it, or another --out)"
        )
    store = open_store(Path(embeddings))

    arch = str(pick(arch, cfg, "arch", "matryoshka", str))
    n = pick(n_latents, cfg, "n_latents", None, int)
    if n is None:
        n = expansion_to_latents(store.dim, float(pick(expansion, cfg, "expansion", 8, float)))
    k_value = pick(k, cfg, "k", None, int)
    if arch in ("topk", "batchtopk") and k_value is None:
        k_value = 64
    sae_cfg = SAEConfig(
        arch=arch,
        d_in=store.dim,
        n_latents=int(n),
        k=int(k_value) if arch in ("topk", "batchtopk") else None,
        k_list=matryoshka_k_list(int(n), int(pick(k_min, cfg, "k_min", 64, int)))
        if arch == "matryoshka"
        else None,
        weighting=str(pick(weighting, cfg, "weighting", "uw", str)).lower(),
        l1=float(pick(l1, cfg, "l1", 0.003, float)) if arch == "relu" else None,
        loss=str(pick(loss, cfg, "loss", "mse", str)).lower(),
        aux_k=int(pick(aux_k, cfg, "aux_k", 0, int)),
        aux_coef=float(pick(aux_coef, cfg, "aux_coef", 1 / 32, float)),
        mean_center=bool(pick(mean_center, cfg, "mean_center", True, bool)),
        embedding_model=store.model,
        pretrained=store.pretrained,
        modality=store.modality,
    )
    train_cfg = TrainConfig(
        epochs=int(pick(epochs, cfg, "epochs", 10, int)),
        batch_size=int(pick(batch_size, cfg, "batch_size", 4096, int)),
        lr=pick(lr, cfg, "lr", None, float),
        max_steps=pick(max_steps, cfg, "max_steps", None, int),
        seed=int(pick(seed, cfg, "seed", 0, int)),
        device=str(pick(device, cfg, "device", "auto", str)),
        checkpoint_every=int(pick(checkpoint_every, cfg, "checkpoint_every", 500, int)),
        data_on_device=str(pick(data_on_device, cfg, "data_on_device", "auto", str)),
        stream_chunk_rows=int(pick(stream_chunk_rows, cfg, "stream_chunk_rows", 1 << 16, int)),
        stream_buffer_chunks=int(pick(stream_buffer_chunks, cfg, "stream_buffer_chunks", 4, int)),
        stream_shuffle=str(pick(stream_shuffle, cfg, "stream_shuffle", "buffer", str)).lower(),
        decay_fraction=float(pick(None, cfg, "decay_fraction", 0.2, float)),
        dead_window=int(pick(None, cfg, "dead_window", 1_000_000, int)),
    )
    main_rank = env_rank() == 0  # torchrun: only rank 0 prints and deletes
    if overwrite and not resume and main_rank:
        for name in ("sae.safetensors", "config.json", "training.json", "checkpoint.safetensors"):
            (out / name).unlink(missing_ok=True)

    with distributed_session(train_cfg.device):
        _run_training(store, sae_cfg, train_cfg, out, resume, quiet, main_rank)


def _run_training(
    store: EmbeddingStore,
    sae_cfg: SAEConfig,
    train_cfg: TrainConfig,
    out: Path,
    resume: bool,
    quiet: bool,
    main_rank: bool,
) -> None:
    if not main_rank:
        train_sae(store, sae_cfg, train_cfg, out, resume=resume)
        return
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    arch = sae_cfg.arch
    err_console.print(
        f"training [bold]{arch}[/] SAE: d={store.dim}, n={sae_cfg.n_latents}"
        + (f", k-list={list(sae_cfg.k_list)}" if sae_cfg.k_list else "")
        + (f", k={sae_cfg.k}" if sae_cfg.k else "")
        + f" on {store.describe()}"
        + (f", {world} processes" if world > 1 else "")
    )
    if progress_enabled(quiet):
        with Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        ) as bar:
            task = bar.add_task("train", total=None, stats="")

            def on_step(state, metrics):  # type: ignore[no-untyped-def]
                bar.update(
                    task,
                    completed=state.step,
                    total=_total_steps(store.count, train_cfg),
                    stats=f"loss {metrics['loss']:.4f}  fvu {metrics['fvu']:.4f}  L0 {metrics['l0']:.1f}  dead {metrics['dead']}",
                )

            result = train_sae(store, sae_cfg, train_cfg, out, resume=resume, on_step=on_step)
    else:
        result = train_sae(store, sae_cfg, train_cfg, out, resume=resume)
    console.print(_summary_table(result.summary, out))


def _total_steps(count: int, cfg: TrainConfig) -> int:
    steps = cfg.epochs * -(-count // cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _summary_table(summary: dict, out: Path) -> Table:
    final = summary.get("final", {})
    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("steps", f"{summary['steps']}"),
        ("epochs", f"{summary['epochs']}"),
        ("time", f"{summary['seconds']:.1f} s"),
        (
            "samples / s",
            f"{summary['samples_per_second']:,.0f}" if summary.get("samples_per_second") else "-",
        ),
        ("device", summary["device"]),
        ("processes", f"{summary.get('world_size', 1)}"),
        ("data", summary.get("data_source", "-")),
        ("final loss", f"{final.get('loss', float('nan')):.5f}"),
        ("final FVU (batch)", f"{final.get('fvu', float('nan')):.4f}"),
        ("final L0", f"{final.get('l0', float('nan')):.1f}"),
        ("dead latents", f"{summary['dead_latents']}"),
        ("saved to", str(out)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
