"""The sparse autoencoder shared by every architecture: preprocessing, encoder, decoder.

Notation: ``x ∈ R^d`` a raw embedding, ``n`` latents.

* Preprocessing (stored with the model): ``x̃ = (x − μ)·s`` with ``μ`` the training mean (0 when
  mean-centering is off) and ``s = sqrt(d / E‖x − μ‖²)``, so ``E‖x̃‖² = d``.
* Encoder: ``pre = (x̃ − b_pre) W_enc + b_enc``.
* Decoder: ``x̂̃ = z W_dec + b_pre``, rows of ``W_dec`` kept at unit norm.
* Post-processing: ``x̂ = x̂̃ / s + μ``. Everything a user sees is in raw embedding space.

Architectures differ only in how ``z`` is computed from ``pre`` (:meth:`activation`) and in
their training loss (:meth:`training_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from audit.errors import InputError
from audit.sae.nested import level_sample_weights

CONFIG_FORMAT = "msae-audit/sae"
CONFIG_VERSION = 1
ARCHITECTURES = ("matryoshka", "topk", "batchtopk", "relu")


@dataclass(frozen=True)
class SAEConfig:
    """Everything needed to rebuild a model; stored as ``config.json`` next to the weights."""

    arch: str
    d_in: int
    n_latents: int
    k: int | None = None  # topk / batchtopk
    k_list: tuple[int, ...] | None = None  # matryoshka
    weighting: str = "uw"  # matryoshka: "uw" (α_i = 1) or "rw" (α = [h, …, 1])
    l1: float | None = None  # relu
    loss: str = "mse"  # "mse" or "nmse"
    aux_k: int = 0  # AuxK latents for dead-latent revival (0 = off)
    aux_coef: float = 1.0 / 32.0
    soft_cap: float = 0.0  # tanh soft cap of latents (only for imported reference models)
    mean_center: bool = True
    threshold_kind: str = "global"  # batchtopk inference threshold: "global" or "per_latent"
    embedding_model: str | None = None
    pretrained: str | None = None
    modality: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(
                f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        for name in ("d_in", "n_latents"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"SAE config: {name} must be a positive integer, got {value!r}")
        if self.arch in ("topk", "batchtopk") and (
            not _is_int(self.k) or not 1 <= self.k <= self.n_latents
        ):
            raise InputError(
                f"{self.arch} needs 1 <= k <= n_latents ({self.n_latents}), got k={self.k!r}"
            )
        if self.arch == "matryoshka":
            self._check_matryoshka()
        if self.arch == "relu" and (self.l1 is None or not self.l1 >= 0):
            raise InputError(f"relu needs a non-negative l1 coefficient, got {self.l1!r}")
        if self.loss not in ("mse", "nmse"):
            raise InputError(f"loss must be 'mse' or 'nmse', got {self.loss!r}")
        if self.threshold_kind not in ("global", "per_latent"):
            raise InputError(
                f"threshold_kind must be 'global' or 'per_latent', got {self.threshold_kind!r}"
            )
        if not _is_int(self.aux_k) or self.aux_k < 0:
            raise InputError(f"aux_k must be a non-negative integer, got {self.aux_k!r}")
        self._check_coefficients()
        self._check_descriptions()

    def _check_descriptions(self) -> None:
        """``mean_center`` a boolean and the provenance fields strings (or null): a config.json
        saying ``"mean_center": "false"`` or ``"embedding_model": 5`` is refused, not read."""
        if not isinstance(self.mean_center, bool):
            raise InputError(
                f"SAE config: mean_center must be true or false, got {self.mean_center!r}"
            )
        for name in ("embedding_model", "pretrained", "modality"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InputError(f"SAE config: {name} must be a string or null, got {value!r}")

    def _check_coefficients(self) -> None:
        """``aux_coef``, ``soft_cap`` and (when set) ``l1``: finite numbers ≥ 0 — a NaN here
        would only show as a NaN model at the end of training."""
        for name in ("aux_coef", "soft_cap", "l1"):
            value = getattr(self, name)
            if value is None and name == "l1":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise InputError(f"SAE config: {name} must be a finite number >= 0, got {value!r}")

    def _check_matryoshka(self) -> None:
        """A strictly increasing ``k_list`` of positive sizes ending at ``n_latents``."""
        ks = self.k_list
        if not ks or any(not _is_int(k) or k < 1 for k in ks) or list(ks) != sorted(set(ks)):
            raise InputError(f"matryoshka needs a strictly increasing k_list, got {ks!r}")
        if ks[-1] != self.n_latents:
            raise InputError(
                f"matryoshka k_list must end with n_latents={self.n_latents}, got {ks[-1]}"
            )
        if self.weighting not in ("uw", "rw"):
            raise InputError(f"weighting must be 'uw' or 'rw', got {self.weighting!r}")

    @property
    def level_weights(self) -> tuple[float, ...]:
        """Matryoshka level weights α over ascending k (``rw``: the smallest k weighs most)."""
        h = len(self.k_list or ())
        return tuple(float(h - i) for i in range(h)) if self.weighting == "rw" else (1.0,) * h

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["k_list"] = list(self.k_list) if self.k_list is not None else None
        extra = data.pop("extra")
        for key in list(data):
            if data[key] is None and key in ("k", "k_list", "l1"):
                del data[key]
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **data, **extra}

    @classmethod
    def from_json(cls, data: Any, source: str = "config.json") -> SAEConfig:
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a JSON object")
        if data.get("format") != CONFIG_FORMAT:
            raise InputError(
                f"{source}: format is {data.get('format')!r}, expected '{CONFIG_FORMAT}'"
            )
        if data.get("version") != CONFIG_VERSION:
            raise InputError(f"{source}: unsupported SAE config version {data.get('version')!r}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("format", "version")}
        if isinstance(kwargs.get("k_list"), list):
            kwargs["k_list"] = tuple(kwargs["k_list"])
        for key in ("arch", "d_in", "n_latents"):
            if key not in kwargs:
                raise InputError(f"{source}: missing '{key}'")
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:
            raise InputError(f"{source}: {exc}") from exc


class TrainOutput(NamedTuple):
    """One training forward pass (preprocessed space)."""

    loss: Tensor  # scalar to minimise (reconstruction + sparsity/aux terms)
    recon_loss: Tensor  # reconstruction part (detached)
    aux_loss: Tensor  # AuxK part (detached; 0 when off)
    x_hat: Tensor  # [B, d] reconstruction of the model's main code (detached)
    active: Tensor  # [B] non-zero latents per row in that code
    fired: Tensor  # [n] bool: latents that fired in this batch


class SparseAutoencoder(nn.Module):
    """Base class: parameters, pre/post-processing, decoding and the unit-norm machinery."""

    arch: ClassVar[str] = ""

    def __init__(self, cfg: SAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_in, cfg.n_latents
        self.W_enc = nn.Parameter(torch.empty(d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(()))
        # nmse's reference point: the training data's mean in preprocessed space (0 when
        # mean-centring); set by training, not part of the model format.
        self.register_buffer("nmse_center", torch.zeros(d), persistent=False)
        self.reset_parameters()

    # -- shapes ------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def n_latents(self) -> int:
        return self.cfg.n_latents

    # -- initialisation ----------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(
        self, generator: torch.Generator | None = None, enc_scale: float = 0.1
    ) -> None:
        """Decoder rows random unit-norm, ``W_enc = enc_scale · W_decᵀ``, biases 0."""
        w = torch.randn(self.cfg.n_latents, self.cfg.d_in, generator=generator)
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T * enc_scale)
        self.b_enc.zero_()
        self.b_pre.zero_()

    @torch.no_grad()
    def set_preprocessing(self, mean: Tensor, scale: float | Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))

    # -- pre/post-processing -----------------------------------------------------------------
    def preprocess(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.scale

    def postprocess(self, x_tilde: Tensor) -> Tensor:
        return x_tilde / self.scale + self.mean

    # -- encoding ----------------------------------------------------------------------------
    def pre_activations(self, x_tilde: Tensor) -> Tensor:
        return torch.addmm(self.b_enc, x_tilde - self.b_pre, self.W_enc)

    def activation(self, pre: Tensor) -> Tensor:
        """The inference code ``z`` from pre-activations (architecture specific)."""
        raise NotImplementedError

    def _cap(self, z: Tensor) -> Tensor:
        cap = self.cfg.soft_cap
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def encode(self, x: Tensor, topk: int | None = None) -> Tensor:
        """Raw embeddings ``[B, d]`` to the inference code ``[B, n]`` (optionally top-k only)."""
        z = self._cap(self.activation(self.pre_activations(self.preprocess(x))))
        return keep_topk(z, topk) if topk is not None else z

    #: Whether each latent's activation depends on its own pre-activation only (not TopK's).
    elementwise: ClassVar[bool] = True

    def activate_columns(self, pre: Tensor, cols: Tensor) -> Tensor:
        """The activation of the pre-activations of latents ``cols`` (element-wise
        architectures; may work in place): ``activation(pre_full)[:, cols]``."""
        return self._cap(pre.clamp_min_(0))

    def column_encoder(self, cols: Tensor | None = None) -> Callable[[Tensor], Tensor]:
        """``x ↦ encode(x)[:, cols]`` (all latents when ``cols`` is None). With an element-wise
        activation only the requested latents are computed, from encoder columns gathered
        once, which saves the ``[B, n]`` code when few latents are needed."""
        if not self.elementwise:
            return lambda x: self.encode(x) if cols is None else self.encode(x)[:, cols]
        if cols is None:
            cols = torch.arange(self.n_latents, device=self.W_enc.device)
            w, b = self.W_enc, self.b_enc
        else:
            w, b = self.W_enc.detach()[:, cols].contiguous(), self.b_enc.detach()[cols]

        def encode(x: Tensor) -> Tensor:
            if cols.numel() == 0:
                return x.new_zeros((x.shape[0], 0))
            return self.activate_columns(torch.addmm(b, self.preprocess(x) - self.b_pre, w), cols)

        return encode

    # -- decoding ----------------------------------------------------------------------------
    def decode_tilde(self, z: Tensor) -> Tensor:
        return z @ self.W_dec + self.b_pre

    def decode(self, z: Tensor) -> Tensor:
        """Code ``[B, n]`` to raw embedding space ``[B, d]``."""
        return self.postprocess(self.decode_tilde(z))

    def forward(self, x: Tensor, topk: int | None = None) -> Tensor:
        """Reconstruct raw embeddings with the inference code."""
        return self.decode(self.encode(x, topk=topk))

    def decoder_directions(self) -> Tensor:
        """Each latent's direction in raw embedding space: ``W_dec[j] / s`` (``[n, d]``)."""
        return self.W_dec / self.scale

    def inference_description(self) -> str:
        return "relu(pre)"

    # -- training ----------------------------------------------------------------------------
    def training_loss(self, x_tilde: Tensor, dead: Tensor | None = None) -> TrainOutput:
        raise NotImplementedError

    def reconstruction_loss(self, x_tilde: Tensor, x_hat: Tensor) -> Tensor:
        """``mse``: mean over batch and dimensions; ``nmse``: mean over the batch of
        ``‖x̃ − x̂̃‖² / ‖x̃ − c‖²``, ``c`` the data mean (:attr:`nmse_center`)."""
        weights = level_sample_weights(x_tilde, self.cfg.loss, self.nmse_center)
        return ((x_hat - x_tilde).pow(2).sum(1) * weights).sum()

    def uses_aux_loss(self, dead: Tensor | None) -> bool:
        """Whether this step has an AuxK term (it needs the pre-activations)."""
        return bool(self.cfg.aux_k) and dead is not None and bool(dead.any())

    def aux_loss(
        self, x_tilde: Tensor, x_hat: Tensor, pre: Tensor | None, dead: Tensor | None
    ) -> Tensor:
        """AuxK (Gao et al., 2024): dead latents' top-``aux_k`` reconstruct the residual.

        ``aux_coef · ‖e − ê‖² / ‖e − ē‖²`` with ``e = x̃ − x̂̃`` (detached) and ``ê`` decoded from
        the ``aux_k`` largest pre-activations among dead latents (no bias).
        """
        if pre is None or not self.uses_aux_loss(dead):
            return x_tilde.new_zeros(())
        residual = (x_tilde - x_hat).detach()
        k = min(self.cfg.aux_k, int(dead.sum()))
        masked = pre.masked_fill(~dead, float("-inf"))
        values, indices = torch.topk(masked, k, dim=1)
        code = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
        recon = code @ self.W_dec
        denom = (residual - residual.mean(0)).pow(2).sum().clamp_min(torch.finfo(pre.dtype).tiny)
        return self.cfg.aux_coef * (recon - residual).pow(2).sum() / denom

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (called after each optimizer step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def rescale_decoder_rows(self) -> None:
        """Decoder rows to unit norm with ``W_enc`` columns and ``b_enc`` scaled inversely, so
        ``z_j W_dec[j]`` is unchanged for ReLU codes (the reference code's renormalisation)."""
        norm = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec.div_(norm[:, None])
        self.W_enc.mul_(norm[None, :])
        self.b_enc.mul_(norm)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the row-parallel component of the decoder gradient (keeps rows on the sphere)."""
        if self.W_dec.grad is not None:
            parallel = (self.W_dec.grad * self.W_dec).sum(1, keepdim=True)
            self.W_dec.grad.sub_(parallel * self.W_dec)

    def after_step(self, train_output: TrainOutput) -> None:
        """Hook for architectures that track statistics during training (BatchTopK)."""


def _is_int(value: object) -> bool:
    """An integer, and not a boolean (JSON ``true`` is Python's ``True``, an ``int``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def keep_topk(z: Tensor, k: int) -> Tensor:
    """Keep each row's ``k`` largest entries of a code, zero the rest."""
    k = min(int(k), z.shape[1])
    if k >= z.shape[1]:
        return z
    values, indices = torch.topk(z, k, dim=1)
    return torch.zeros_like(z).scatter(1, indices, values)


def expansion_to_latents(d_in: int, expansion: float) -> int:
    if not math.isfinite(expansion):
        raise InputError(f"--expansion must be a finite number, got {expansion}")
    n = round(d_in * expansion)
    if n < 1:
        raise InputError(f"expansion {expansion} gives no latents for d={d_in}")
    return n


#: ``unit``: ``s = sqrt(d / E‖x − μ‖²)``, so ``E‖x̃‖² = d`` whatever the embeddings' norm.
#: ``reference``: the paper's code, ``s = √d / E‖x − μ‖²`` (a squared norm in the denominator:
#: ``E‖x̃‖² = d / E‖x − μ‖²``, which is ``d`` only when ``E‖x − μ‖² = 1``).
SCALE_RULES = ("unit", "reference")


def preprocessing_scale(d: int, mean_sq_norm: float, rule: str = "unit") -> float:
    """The input scale ``s`` from ``E‖x − μ‖²`` (see :data:`SCALE_RULES`).

    >>> preprocessing_scale(4, 16.0), preprocessing_scale(4, 16.0, "reference")
    (0.5, 0.125)
    """
    if not mean_sq_norm > 0 or not math.isfinite(mean_sq_norm):
        raise InputError("embeddings have zero variance around their mean; cannot scale them")
    if rule == "reference":
        return math.sqrt(d) / mean_sq_norm
    return math.sqrt(d / mean_sq_norm)
