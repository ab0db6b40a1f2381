"""``msae-audit train``: fit an SAE on an embedding store.

Under ``torchrun --nproc-per-node N -m audit train …`` the same command trains data-parallel
(DDP, NCCL on GPUs, gloo on CPUs); only rank 0 prints and writes files.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields
from pathlib import Path

from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import (
    command_options,
    device_option,
    option,
    quiet_option,
    seed_option,
)
from audit.cli.progress import Bars
from audit.distributed import distributed_session, env_rank
from audit.errors import InputError
from audit.sae import SAEConfig, matryoshka_k_list
from audit.sae.base import expansion_to_latents
from audit.sae.train import DEFAULT_LR, TrainConfig, TrainState, train_sae
from audit.sae.train_checkpoint import CHECKPOINT_FILE
from audit.store import EmbeddingStore, open_store

_LR_SHOWN = "per architecture, as the paper's code: " + ", ".join(
    f"{arch} {lr:g}" for arch, lr in DEFAULT_LR.items()
)


@dataclass(frozen=True)
class TrainOptions:
    """Every option of ``msae-audit train`` (and of its ``--config`` file) with its default;
    the model's and the run's defaults are :class:`SAEConfig`'s and :class:`TrainConfig`'s."""

    embeddings: Path = option(
        None, "--embeddings", help="Embedding store directory or .npy file.", required=True
    )
    arch: str = option("matryoshka", "--arch", help="matryoshka | topk | batchtopk | relu")
    expansion: float = option(8.0, "--expansion", help="n_latents = expansion × d")
    n_latents: int | None = option(
        None,
        "--n-latents",
        help="Number of latents (overrides --expansion).",
        shown="expansion × d",
    )
    k_min: int = option(64, "--k-min", help="Matryoshka: smallest k; the k-list doubles up to n")
    weighting: str = option(
        SAEConfig.weighting, "--weighting", help="Matryoshka level weights: uw | rw"
    )
    k: int = option(64, "--k", help="TopK / BatchTopK: active latents per sample.")
    threshold_kind: str = option(
        SAEConfig.threshold_kind,
        "--threshold-kind",
        help="BatchTopK: the inference threshold estimated in training, global | per_latent",
    )
    l1: float = option(0.003, "--l1", help="ReLU: L1 coefficient λ")
    loss: str = option(SAEConfig.loss, "--loss", help="mse | nmse")
    aux_k: int = option(
        SAEConfig.aux_k, "--aux-k", help="AuxK latents to revive dead ones (0 = off)"
    )
    aux_coef: float = option(SAEConfig.aux_coef, "--aux-coef", help="AuxK loss weight")
    mean_center: bool = option(
        SAEConfig.mean_center, "--mean-center/--no-mean-center", help="Subtract the training mean"
    )
    epochs: int = option(TrainConfig.epochs, "--epochs", help="Passes over the data")
    batch_size: int = option(TrainConfig.batch_size, "--batch-size", help="Samples per step")
    lr: float | None = option(TrainConfig.lr, "--lr", help="AdamW learning rate", shown=_LR_SHOWN)
    max_steps: int | None = option(
        TrainConfig.max_steps, "--max-steps", help="Stop after this many steps.", shown="no limit"
    )
    decay_fraction: float = option(
        TrainConfig.decay_fraction,
        "--decay-fraction",
        help="Share of the steps over which the learning rate decays linearly to 0",
    )
    seed: int = seed_option(TrainConfig.seed, help="Seed for initialisation and data order")
    device: str = device_option(TrainConfig.device)
    checkpoint_every: int = option(
        TrainConfig.checkpoint_every,
        "--checkpoint-every",
        help="Steps between checkpoints (0 = at the end of each epoch)",
    )
    dead_window: int = option(
        TrainConfig.dead_window,
        "--dead-window",
        help="A latent is dead after this many samples without firing",
    )
    data_on_device: str = option(
        TrainConfig.data_on_device,
        "--data-on-device",
        help="yes: hold the data on the device; no: stream it from the store's memory map; "
        "auto: yes when it fits in half the free device memory",
    )
    stream_chunk_rows: int = option(
        TrainConfig.stream_chunk_rows, "--stream-chunk-rows", help="Streaming: rows per chunk read"
    )
    stream_buffer_chunks: int = option(
        TrainConfig.stream_buffer_chunks,
        "--stream-buffer-chunks",
        help="Streaming: chunks shuffled together; memory ≈ chunk rows × chunks × d × 4 bytes",
    )
    stream_shuffle: str = option(
        TrainConfig.stream_shuffle,
        "--stream-shuffle",
        help="Streaming: buffer (shuffle inside the buffer, forward reads) | global (the "
        "in-memory order, random reads)",
    )
    out: Path = option(None, "--out", help="Output SAE directory.", required=True)
    resume: bool = option(
        False, "--resume", help="Continue an interrupted run in --out.", in_config=False
    )
    overwrite: bool = option(
        False, "--overwrite", help="Replace a finished model in --out.", in_config=False
    )
    quiet: bool = quiet_option()

    def sae_config(self, store: EmbeddingStore) -> SAEConfig:
        arch = self.arch
        n = self.n_latents
        if n is None:
            n = expansion_to_latents(store.dim, self.expansion)
        return SAEConfig(
            arch=arch,
            d_in=store.dim,
            n_latents=int(n),
            k=self.k if arch in ("topk", "batchtopk") else None,
            k_list=matryoshka_k_list(int(n), self.k_min) if arch == "matryoshka" else None,
            weighting=self.weighting.lower(),
            l1=self.l1 if arch == "relu" else None,
            loss=self.loss.lower(),
            aux_k=self.aux_k,
            aux_coef=self.aux_coef,
            mean_center=self.mean_center,
            threshold_kind=self.threshold_kind.lower(),
            embedding_model=store.model,
            pretrained=store.pretrained,
            modality=store.modality,
        )

    def train_config(self) -> TrainConfig:
        names = {f.name for f in fields(TrainConfig)} & {f.name for f in fields(self)}
        values = {name: getattr(self, name) for name in names}
        return TrainConfig(**{**values, "stream_shuffle": self.stream_shuffle.lower()})


@app.command(rich_help_panel="Models")
@command_options(TrainOptions, config_file=True)
def train(opts: TrainOptions) -> None:
    """Train a Matryoshka (or TopK, BatchTopK, ReLU) sparse autoencoder on embeddings."""
    out = opts.out
    _check_out(out, opts.resume or opts.overwrite)
    store = open_store(opts.embeddings)
    sae_cfg = opts.sae_config(store)
    train_cfg = opts.train_config()
    main_rank = env_rank() == 0  # torchrun: only rank 0 prints
    # --overwrite deletes nothing up front: the new run's checkpoints replace the old one's as
    # it goes, and the finished model replaces the old model file by file (each write atomic),
    # so bad input or an interruption never costs the model that was there.

    created = not out.exists()
    try:
        with distributed_session(train_cfg.device):
            _run_training(store, sae_cfg, train_cfg, out, opts.resume, opts.quiet, main_rank)
    except BaseException:
        # A run that fails before writing anything leaves no empty --out behind (a folder
        # that existed, or holds anything, is kept as it is).
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _check_out(out: Path, replacing_allowed: bool) -> None:
    """``--out`` holding a model or an interrupted run needs ``--overwrite`` or ``--resume``.
    A folder with neither keeps its ``config.json`` and ``training.json``: training writes
    both, so there they are the user's own files."""
    model, run = (out / "sae.safetensors").exists(), (out / CHECKPOINT_FILE).exists()
    if model and not replacing_allowed:
        raise InputError(
            f"{out} already holds a model (use --overwrite to replace it, or another --out)"
        )
    if run and not replacing_allowed:
        raise InputError(
            f"{out} holds an interrupted run (use --resume to continue it, or --overwrite "
            "to start over)"
        )
    if model or run:
        return
    found = [name for name in ("config.json", "training.json") if (out / name).exists()]
    if found:
        raise InputError(
            f"{out} holds {' and '.join(found)} but no model; training there would replace "
            f"{'them' if len(found) > 1 else 'it'}: give an empty or new --out"
        )


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
    total = train_cfg.total_steps(store.count)

    def on_step(state: TrainState, metrics: dict[str, float]) -> None:
        note = (
            f"loss {metrics['loss']:.4f}  fvu {metrics['fvu']:.4f}  L0 {metrics['l0']:.1f}  "
            f"dead {metrics['dead']}"
        )
        bars("train", state.step, total, note=note)

    with Bars(quiet) as bars:
        result = train_sae(store, sae_cfg, train_cfg, out, resume=resume, on_step=on_step)
    console.print(_summary_table(result.summary, out))
    for warning in result.summary.get("warnings", []):
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)


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
