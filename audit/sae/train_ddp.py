"""Data-parallel training helpers: the DDP wrapper and the one all-reduce each step needs."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from audit.distributed import DistContext
from audit.sae.base import SparseAutoencoder


class _TrainingLoss(torch.nn.Module):
    """``training_loss`` as a module's forward, the call DDP intercepts to prepare its reducer."""

    def __init__(self, model: SparseAutoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, dead: torch.Tensor | None) -> Any:
        return self.model.training_loss(x, dead)


def wrap_ddp(
    model: SparseAutoencoder, device: torch.device
) -> torch.nn.parallel.DistributedDataParallel:
    ddp_class = torch.nn.parallel.DistributedDataParallel
    # The buffers (mean, scale, BatchTopK's threshold) are kept equal by construction (they
    # are synced once at construction); broadcasting them before every forward only costs
    # time. Recent PyTorch renamed the switch; older releases know only the old name.
    no_forward_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp_class.__init__).parameters
        else {"broadcast_buffers": False}
    )
    return ddp_class(
        _TrainingLoss(model),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
        **no_forward_sync,
    )


@torch.no_grad()
def all_reduce_step(
    dist_ctx: DistContext,
    model: SparseAutoencoder,
    x: torch.Tensor,
    out: Any,
    local_rows: int,
    variance: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One all-reduce of the step's fired latents, metric sums and BatchTopK threshold estimate.

    Returns the global fired mask and the global batch's metrics (as a single process on the
    whole batch would report them). Sets the threshold estimate BatchTopK's ``after_step``
    folds in to the mean over the ranks that had rows.
    """
    n, d = out.fired.numel(), x.shape[1]
    # BatchTopK's smallest kept activation: one value, or one per latent (inf where not kept).
    threshold = getattr(model, "threshold", None)
    m = threshold.numel() if threshold is not None else 0
    stats = torch.zeros(n + d + 7 + 2 * m, dtype=torch.float64, device=x.device)
    kept = getattr(model, "_last_min_kept", None)
    if local_rows:
        xd = x.double()
        stats[:n] = out.fired.double()
        stats[n : n + d] = xd.sum(0)
        stats[n + d : n + d + 7] = torch.stack(
            [
                out.loss.detach().double() * local_rows,
                out.recon_loss.double() * local_rows,
                out.aux_loss.double() * local_rows,
                (out.x_hat.double() - xd).pow(2).sum(),
                xd.pow(2).sum(),
                xd.new_tensor(float(local_rows)),
                out.active.double().sum(),
            ]
        )
        if kept is not None and m:
            values = kept.double().reshape(-1)
            found = torch.isfinite(values)
            stats[n + d + 7 : n + d + 7 + m] = torch.where(found, values, 0.0)
            stats[n + d + 7 + m :] = found.double()
    dist_ctx.all_reduce_tensor(stats, "sum")
    loss, recon, aux, err, sq, rows, active = stats[n + d : n + d + 7].tolist()
    if m:
        kept_sum, kept_count = stats[n + d + 7 : n + d + 7 + m], stats[n + d + 7 + m :]
        mean_kept = torch.where(
            kept_count > 0, kept_sum / kept_count.clamp_min(1), float("inf")
        ).reshape(threshold.shape)
        model._last_min_kept = mean_kept.to(threshold) if bool((kept_count > 0).any()) else None
    x_sum = stats[n : n + d]
    if variance is not None:  # the data's variance per row (as the single-process metrics)
        spread = max(rows * variance, 1e-12)
    else:
        spread = max(sq - float(x_sum.pow(2).sum()) / rows, 1e-12)
    metrics = {
        "loss": loss / rows,
        "recon": recon / rows,
        "aux": aux / rows,
        "fvu": err / spread,
        "l0": active / rows,
    }
    return stats[:n] > 0, metrics
