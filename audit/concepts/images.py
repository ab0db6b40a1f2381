"""Image evidence for naming: how each latent's activation over probe images follows each
word's image–text similarity, the words' zero-shot labels, and what random latents reach.

Notation: ``x̂`` a unit image embedding, ``t̂_w`` a unit text embedding, ``t̄`` the mean of the
vocabulary's ``t̂``. The per-image centred similarity ``ŝ_w(x) = x̂·t̂_w − x̂·t̄ = x̂·(t̂_w − t̄)``
is how much more the image matches word ``w`` than the vocabulary's average word; centring per
image removes what moves every similarity at once (a border, a watermark, the image's overall
fit to text), which would otherwise correlate with any latent that follows it.

* **Response** of latent ``j`` to word ``w``: ``cov(z_j, ŝ_w) = C_j · (t̂_w − t̄)`` with
  ``C_j = cov(z_j, x̂)`` — a ``d``-vector per latent, so all latents × all words cost one
  ``[n, d] × [d, V]`` product, never an images × words matrix. It is in similarity units: words
  whose similarity barely moves over the probe images (what CLIP does not see there) respond
  little, whatever their correlation.
* **Selectivity**: the robust z of a response among the latent's responses to the whole
  vocabulary, ``(r_w − median_v r_v) / (1.4826 · MAD_v r_v)``; a latent that rises for every
  ordinary word when a marker is absent has no outstanding positive word, but a strongly
  negative one (the marker's), which the polarity rule turns into ``no <word>``.
* **Zero-shot labels** of word ``w``: ``ŝ_w(x) > θ_w`` with ``θ_w`` halfway between the median
  and the ``label_quantile`` quantile of ``ŝ_w`` over the probe's fitting half: an image shows
  ``w`` when it is closer to the word's best-matching images than to a typical one.
* **Random latents**: ``ReLU(x̃ · r − b)`` for Gaussian directions ``r`` in the SAE's input
  space, each with the firing rate of a randomly drawn real latent (``b`` its quantile). They
  are named exactly like the real latents (each picks its best word among the vocabulary), and
  the ``null_quantile`` of their held-out AUCs is the threshold a name must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audit.concepts.auc import auc_from_ranks, average_ranks
from audit.errors import InputError

MIN_PROBE_IMAGES = 200
MAD_TO_SD = 1.4826  # the MAD of a normal distribution is 0.6745 σ
MEAN_AD_TO_SD = 1.2533  # its mean absolute deviation is 0.7979 σ


@dataclass(frozen=True)
class ImageNamingSettings:
    """Every knob of image-grounded naming, with the documented defaults."""

    max_probe: int = 20_000  # probe images used (a seeded sample of larger stores)
    random_latents: int = 2000  # random latents named like the real ones: the AUC null
    null_quantile: float = 0.95  # a name's held-out AUC must beat this share of them
    kin_quantile: float = 0.9  # a latent of the word joins its concept above this share
    label_quantile: float = 0.99  # θ_w halfway between the median and this quantile of ŝ_w
    absence_factor: float = 2.0  # "no <word>" when its selectivity is this many times larger
    min_selectivity: float = 5.0  # robust z of the named word among the vocabulary's
    duplicate_correlation: float = 0.95  # latents this correlated over the probe are one concept
    seed: int = 0
    chunk_rows: int = 4096


@dataclass
class Probe:
    """The probe images split into a fitting half (choosing words, building concepts) and a
    held-out half (validating them), with each half's SAE codes."""

    x_fit: Tensor  # raw embeddings
    x_hold: Tensor
    z_fit: Tensor  # SAE codes [N, n]
    z_hold: Tensor
    rows: int  # images used, both halves

    @property
    def unit_fit(self) -> Tensor:
        return _unit(self.x_fit)

    @property
    def unit_hold(self) -> Tensor:
        return _unit(self.x_hold)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def make_probe(sae: Any, images: np.ndarray, settings: ImageNamingSettings) -> Probe:
    """Check the probe embeddings, sample at most ``max_probe`` of them, split them in halves
    (seeded) and encode both with the SAE (the inference code, as the audit uses it)."""
    if images.ndim != 2 or images.shape[1] != sae.d_in:
        raise InputError(
            f"probe images have shape {list(images.shape)}, but the SAE expects "
            f"[rows, {sae.d_in}] image embeddings"
        )
    x = torch.as_tensor(np.array(images, dtype=np.float32))
    if not torch.isfinite(x).all():
        raise InputError("probe image embeddings contain NaN or inf")
    if images.shape[0] < MIN_PROBE_IMAGES:
        raise InputError(
            f"{images.shape[0]} probe images are too few to validate names "
            f"(at least {MIN_PROBE_IMAGES}: half to choose words, half to check them)"
        )
    rng = np.random.default_rng([settings.seed, 0x9A3E])
    order = rng.permutation(images.shape[0])[: settings.max_probe]
    half = len(order) // 2
    x_fit = x[torch.as_tensor(np.sort(order[:half]))]
    x_hold = x[torch.as_tensor(np.sort(order[half:]))]
    return Probe(
        x_fit,
        x_hold,
        encode(sae, x_fit, settings.chunk_rows),
        encode(sae, x_hold, settings.chunk_rows),
        len(order),
    )


@torch.no_grad()
def encode(sae: Any, x: Tensor, chunk_rows: int) -> Tensor:
    device = sae.W_dec.device
    parts = [
        sae.encode(x[lo : lo + chunk_rows].to(device)).float().cpu()
        for lo in range(0, x.shape[0], chunk_rows)
    ]
    return torch.cat(parts)


def word_directions(text_embeddings: np.ndarray) -> Tensor:
    """``t̂_w − t̄`` for every word: ``ŝ_w(x) = x̂ · (t̂_w − t̄)``."""
    t = _unit(torch.as_tensor(np.array(text_embeddings, dtype=np.float32)))
    return t - t.mean(0, keepdim=True)


def activation_covariance(z: Tensor, unit_x: Tensor, chunk_rows: int) -> Tensor:
    """``C = cov(z, x̂)`` ``[n, d]``, accumulated over row chunks of centred values."""
    z_mean = z.mean(0)
    x_mean = unit_x.mean(0)
    total = torch.zeros(z.shape[1], unit_x.shape[1])
    for lo in range(0, z.shape[0], chunk_rows):
        total += (z[lo : lo + chunk_rows] - z_mean).T @ (unit_x[lo : lo + chunk_rows] - x_mean)
    return total / max(z.shape[0] - 1, 1)


def order_statistics(rows: Tensor, ks: list[int]) -> list[Tensor]:
    """The ``k``-th smallest value (0-based) of each row of ``rows`` ``[c, m]``, for each ``k``
    of ``ks`` (in any order, repeats allowed), as ``[c, 1]`` columns: the values a sort would
    put there, found by selection (NumPy's introselect on the CPU, 3–4× faster there than
    ``torch.median`` or ``kthvalue``).

    >>> [t.flatten().tolist() for t in order_statistics(torch.tensor([[3.0, 1.0, 2.0]]), [0, 1])]
    [[1.0], [2.0]]
    """
    if rows.device.type != "cpu" or rows.requires_grad:
        return [rows.kthvalue(k + 1, dim=1, keepdim=True).values for k in ks]
    chosen = np.partition(rows.numpy(), ks, axis=1)
    return [torch.from_numpy(np.ascontiguousarray(chosen[:, k : k + 1])) for k in ks]


def robust_z(responses: Tensor) -> Tensor:
    """Each row's robust z-scores: ``(r − median) / (1.4826 · MAD)``.

    Where more than half of a row's responses are equal (MAD 0: e.g. many words that the
    CLIP embeds identically) the scale falls back to ``1.2533 · mean |r − median|`` (Iglewicz
    and Hoaglin's modified z-score), so one word a little above the rest is not "selective"
    by a factor of 1e10; a row with no spread at all scores 0.
    """
    lower_median = [(responses.shape[1] - 1) // 2]  # torch.median's: the lower of two middles
    (median,) = order_statistics(responses, lower_median)
    deviation = (responses - median).abs()
    (mad,) = order_statistics(deviation, lower_median)
    mean_deviation = deviation.mean(dim=1, keepdim=True)
    scale = torch.where(mad > 0, MAD_TO_SD * mad, MEAN_AD_TO_SD * mean_deviation)
    return (responses - median) / scale.clamp_min(1e-12)


@dataclass(frozen=True)
class WordChoice:
    """Each latent's best word by image evidence and the selectivity behind it."""

    word: np.ndarray  # [n] vocabulary index
    absent: np.ndarray  # [n] bool: the latent fires when the word is absent
    selectivity: np.ndarray  # [n] robust z of the word (in the chosen direction)
    responsive: np.ndarray  # [n] bool: the latent varies over the probe at all


def choose_words(
    covariance: Tensor, directions: Tensor, absence_factor: float, chunk: int = 512
) -> WordChoice:
    """For every latent, the word whose response stands out most: the highest robust z, or
    the lowest when it is ``absence_factor`` times further out (then the name is ``no <word>``)."""
    n = covariance.shape[0]
    word = np.zeros(n, dtype=np.int64)
    absent = np.zeros(n, dtype=bool)
    selectivity = np.zeros(n, dtype=np.float64)
    responsive = (covariance.abs().sum(1) > 0).numpy()
    for lo in range(0, n, chunk):
        z = robust_z(covariance[lo : lo + chunk] @ directions.T)
        high, high_at = z.max(dim=1)
        low, low_at = z.min(dim=1)
        use_low = -low > absence_factor * high
        word[lo : lo + chunk] = torch.where(use_low, low_at, high_at).numpy()
        absent[lo : lo + chunk] = use_low.numpy()
        selectivity[lo : lo + chunk] = torch.where(use_low, -low, high).double().numpy()
    return WordChoice(word, absent, selectivity, responsive)


def selectivities(
    covariance_rows: Tensor,
    directions: Tensor,
    words: np.ndarray,
    absent: np.ndarray,
    chunk: int = 512,
) -> np.ndarray:
    """The robust z of word ``words[i]`` for activation ``i`` — a latent or a concept's summed
    latents, given by its row of ``cov(z, x̂)`` (``covariance_rows`` ``[c, d]``) — negated where
    ``absent[i]``: one ``[chunk, d] × [d, V]`` product per chunk of activations."""
    out = np.zeros(len(words))
    for lo in range(0, len(words), chunk):
        z = robust_z(covariance_rows[lo : lo + chunk] @ directions.T)
        picked = z[torch.arange(z.shape[0]), torch.as_tensor(words[lo : lo + chunk])]
        out[lo : lo + chunk] = picked.double().numpy()
    return np.where(absent, -out, out)


@dataclass(frozen=True)
class ZeroShotLabels:
    """Zero-shot labels of a set of words on both halves of the probe."""

    words: np.ndarray  # vocabulary indices, one per column
    fit: Tensor  # [N_fit, W] bool
    hold: Tensor  # [N_hold, W] bool
    threshold: Tensor  # [W] θ_w

    def column(self, word: int) -> int:
        return int(np.searchsorted(self.words, word))


def zero_shot_labels(
    probe: Probe, directions: Tensor, words: np.ndarray, quantile: float, chunk: int = 1024
) -> ZeroShotLabels:
    """Labels ``ŝ_w(x) > θ_w`` for the words ``words`` (sorted, unique)."""
    unit_fit, unit_hold = probe.unit_fit, probe.unit_hold
    fit, hold, thresholds = [], [], []
    for lo in range(0, len(words), chunk):
        block = directions[torch.as_tensor(words[lo : lo + chunk])]
        s_fit = unit_fit @ block.T
        by_word = s_fit.T.contiguous()  # contiguous rows select fastest
        rows = by_word.shape[1]
        ks = [(rows - 1) // 2, min(rows - 1, int(quantile * (rows - 1)))]  # median, quantile
        median, high = (column[:, 0] for column in order_statistics(by_word, ks))
        theta = (median + high) / 2
        fit.append(s_fit > theta)
        hold.append(unit_hold @ block.T > theta)
        thresholds.append(theta)
    return ZeroShotLabels(words, torch.cat(fit, 1), torch.cat(hold, 1), torch.cat(thresholds))


def random_latents(probe: Probe, sae: Any, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Activations of random latents ``ReLU(x̃ · r − b)`` on both halves (``[N, count]``), each
    firing as often (on the fitting half) as a randomly drawn responsive real latent."""
    generator = torch.Generator().manual_seed(seed)
    mean = sae.mean.detach().float().cpu()
    directions = torch.randn(probe.x_fit.shape[1], count, generator=generator)
    rates = (probe.z_fit > 0).float().mean(0)
    rates = rates[rates > 0]
    if not len(rates):
        rates = torch.tensor([0.5])
    pick = torch.randint(len(rates), (count,), generator=generator)
    projection_fit = (probe.x_fit - mean) @ directions
    ordered = projection_fit.T.contiguous().sort(dim=1).values
    rows = ordered.shape[1]
    at = ((1 - rates[pick]) * (rows - 1)).long().clamp(0, rows - 1)
    bias = ordered.gather(1, at.unsqueeze(1))[:, 0]
    return torch.relu(projection_fit - bias), torch.relu((probe.x_hold - mean) @ directions - bias)


def null_aucs(probe: Probe, sae: Any, directions: Tensor, settings: Any) -> np.ndarray:
    """Held-out AUCs that random latents reach when named exactly like the real ones: each
    chooses its word (and polarity) among the whole vocabulary on the fitting half, then
    predicts that word's zero-shot labels on the held-out half. The choice is part of the
    null, so a large vocabulary does not make chance matches look good."""
    random_fit, random_hold = random_latents(probe, sae, settings.random_latents, settings.seed)
    covariance = activation_covariance(random_fit, probe.unit_fit, settings.chunk_rows)
    choice = choose_words(covariance, directions, settings.absence_factor)
    labels = zero_shot_labels(probe, directions, np.unique(choice.word), settings.label_quantile)
    columns = np.searchsorted(labels.words, choice.word)
    y = labels.hold[:, torch.as_tensor(columns)] ^ torch.as_tensor(choice.absent)
    return auc_from_ranks(average_ranks(random_hold), y).nan_to_num(0.5).numpy()
