"""The golden audits: fixed inputs, every setting explicit, outputs masked where they must vary.

Each case runs the audit end to end through :func:`audit.fairness.audit_files` (files in, every
report out) and returns the texts that are compared with ``expected/`` (byte for byte but for
float noise in decimals: tests/golden/compare.py):

* ``demo`` — the demo's audit (mean ablation, test split, the demo's gate, seed 0) on a copy of
  the demo's inputs kept in ``inputs/demo`` (test split only), so the test never retrains the
  tiny CLIP; also its HTML, JUnit, Markdown and terminal reports, and ``check`` re-judging it;
* ``planted_*`` — the planted-bias worlds (bias and null classifiers; a linear head on raw and on
  L2-normalised embeddings, a TorchScript module (decode-and-rerun), the probe; an SAE that
  fails the integrity check), generated from their seeds.

Masked: tool versions, the temporary folder the inputs are written to, and the hashes of files
that record the time or the tool version when written (the bank, ``.npz`` and TorchScript files).

Golden values hold for this repository's pinned environment on any x86-64 CPU up to float noise.
If a dependency upgrade changes more, regenerate them (``python -m tests.golden.regenerate``)
and review the diff — every change must be explained.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).parent
INPUTS = HERE / "inputs"
EXPECTED = HERE / "expected"
DEMO_INPUTS = INPUTS / "demo"
MASK = "<masked>"
ROOT = "<root>"

#: Every audit setting, stated here rather than taken from the library's defaults (which may
#: change without changing what these files pin down).
BASE_SETTINGS: dict[str, Any] = {
    "seed": 0,
    "ablation": "zero",
    "split": "auto",
    "classifier_input": "raw",
    "device": "cpu",
    "chunk_rows": 4096,
    "null_rows": 200,
    "null_min_draws": 1000,
    "null_atoms": 16,
    "shortlist": 32,
    "unnamed_top": 10,
    "dose_top": 3,
    "examples": 6,
    "integrity_rows": 8192,
    "probe_c": 1.0,
}

#: The demo's gate (audit/demo.py), with the integrity thresholds written out.
DEMO_GATE = """\
gates:
  worst_group_accuracy: {min: 0.80}
  accuracy_gap: {max: 0.10}
  flagged_concepts: {max: 0}
concepts: {min_dwga: 0.02, max_q: 0.05, allowlist: []}
bootstrap: {samples: 1000, seed: 0}
min_group_size: 100
integrity: {min_cosine: 0.9, min_agreement: 0.9}
"""

#: Every check gated; small bootstrap with its own seed; an allowlisted concept.
PLANTED_GATE = """\
gates:
  worst_group_accuracy: {min: 0.80}
  accuracy_gap: {max: 0.15}
  equalized_odds_difference: {max: 0.20}
  demographic_parity_difference: {min: 0.0, max: 0.60}
  flagged_concepts: {max: 0}
  accuracy: {min: 0.70}
concepts: {min_dwga: 0.02, max_q: 0.05, allowlist: [necktie]}
bootstrap: {samples: 400, seed: 3}
min_group_size: 40
integrity: {min_cosine: 0.9, min_agreement: 0.9}
"""

#: A gate for `check`: the flagged concept allowlisted, the worst group given a lower bar.
LENIENT_GATE = """\
gates:
  worst_group_accuracy: {min: 0.5}
  flagged_concepts: {max: 0}
concepts: {min_dwga: 0.05, max_q: 0.01, allowlist: [red, blond hair]}
bootstrap: {samples: 1000, seed: 0}
min_group_size: 10
integrity: {min_cosine: 0.5, min_agreement: 0.5}
"""


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[str, ...]  # what ``run`` writes to expected/
    run: Callable[[Path], dict[str, str]]  # scratch folder -> {file name: text}


# ------------------------------------------------------------------------------------------
# Masking and running
# ------------------------------------------------------------------------------------------


def mask(value: Any, root: str) -> Any:
    """The JSON with tool versions, the scratch folder and time-stamped file hashes masked."""
    if isinstance(value, dict):
        out = {k: mask(v, root) for k, v in value.items()}
        if isinstance(out.get("tool"), dict):
            out["tool"] = {k: MASK for k in out["tool"]}
        inputs = out.get("inputs")
        if isinstance(inputs, dict):
            for key in ("bank", "classifier"):
                if isinstance(inputs.get(key), dict) and inputs[key].get("sha256"):
                    inputs[key]["sha256"] = MASK
        # The classifier block repeats the classifier file's hash; a TorchScript file stores
        # the path of the scripted class's source, so its bytes depend on the checkout's folder.
        classifier = out.get("classifier")
        if isinstance(classifier, dict) and classifier.get("kind") == "torchscript":
            classifier["sha256"] = MASK
        return out
    if isinstance(value, list):
        return [mask(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, ROOT)
    return value


def json_text(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@contextmanager
def one_thread() -> Iterator[None]:
    """Single-threaded torch: float sums do not depend on how work is split across threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_audit_case(
    scratch: Path,
    embeddings: Path,
    *,
    sae: Path,
    bank: Path,
    classifier: str | Path,
    target: str,
    spurious: str,
    gate: str,
    extra: dict | None = None,
    **settings: Any,
) -> dict:
    """One audit through ``audit_files``; returns the masked result."""
    from audit.report import audit_files

    gate_path = scratch / "gate.yaml"
    gate_path.write_text(gate, encoding="utf-8")
    with one_thread():
        outcome = audit_files(
            embeddings, sae=sae, bank=bank, classifier=classifier, target=target,
            spurious=spurious, out_dir=scratch / "reports", stem="audit", gate=gate_path,
            extra=extra, **{**BASE_SETTINGS, **settings},
        )  # fmt: skip
    result = json.loads((scratch / "reports" / "audit.json").read_text(encoding="utf-8"))
    assert result["exit_code"] == outcome.exit_code
    return mask(result, str(scratch))


def rejudged(result: dict, scratch: Path, gate_text: str) -> str:
    """``msae-audit check`` on a saved (masked) result: the re-judged JSON."""
    from audit.cli import run

    saved = scratch / "saved.json"
    saved.write_text(json_text(result), encoding="utf-8")
    gate = scratch / "check-gate.yaml"
    gate.write_text(gate_text, encoding="utf-8")
    out = scratch / "rejudged.json"
    with _quiet():
        run(["check", "--config", str(gate), str(saved), "--json", str(out)])
    return json_text(mask(json.loads(out.read_text(encoding="utf-8")), str(scratch)))


@contextmanager
def _quiet() -> Iterator[None]:
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        yield


def reports(document: dict) -> dict[str, str]:
    """The HTML, JUnit, Markdown and terminal renderings of a (masked) result."""
    from rich.console import Console

    from audit.fairness import parse_result
    from audit.report import html, junit, markdown
    from audit.report.terminal import render_terminal

    result = parse_result(copy.deepcopy(document))
    console = Console(
        file=io.StringIO(), width=120, color_system=None, force_terminal=False, record=True
    )
    render_terminal(result, console, top=10)
    return {
        "html": html.render_html(result),
        "xml": junit.render_junit(result),
        "md": markdown.render_markdown(result),
        "txt": console.export_text(),
    }


# ------------------------------------------------------------------------------------------
# The demo's audit
# ------------------------------------------------------------------------------------------


def demo_case(scratch: Path) -> dict[str, str]:
    d = DEMO_INPUTS
    result = run_audit_case(
        scratch, d / "store", sae=d / "sae", bank=d / "bank.yaml", classifier=d / "head.npz",
        target="is_circle", spurious="is_red", gate=DEMO_GATE, ablation="mean", split="test",
        extra={"demo": {"planted_concept": "red", "target_column": "is_circle",
                        "spurious_column": "is_red",
                        "target_classes": {"1": "circle", "0": "square"}, "audit_split": "test"}},
    )  # fmt: skip
    # The inputs are read where the repository is, not from the scratch folder.
    result = mask(result, str(HERE))
    out = {"demo.json": json_text(result)}
    out.update({f"demo.{ext}": text for ext, text in reports(result).items()})
    out["demo.check.json"] = rejudged(result, scratch, LENIENT_GATE)
    return out


# ------------------------------------------------------------------------------------------
# Planted worlds
# ------------------------------------------------------------------------------------------


def _planted_files(scratch: Path, *, bias: bool = True, with_split: bool = False, seed: int = 0):
    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=2000, seed=seed, bias=bias, with_split=with_split)
    return world, save_planted_world(world, scratch / "world")


def _planted(
    scratch: Path, paths: dict[str, Path], classifier: str | Path, **settings: Any
) -> dict:
    return run_audit_case(
        scratch, paths["store"], sae=paths["sae"], bank=paths["bank"], classifier=classifier,
        target="Male", spurious="Blond_Hair", gate=PLANTED_GATE, **settings,
    )  # fmt: skip


def planted_bias_raw(scratch: Path) -> dict[str, str]:
    _, paths = _planted_files(scratch)
    result = _planted(scratch, paths, paths["head"])
    return {
        "planted_bias_raw.json": json_text(result),
        "planted_bias_raw.md": reports(result)["md"],
    }


def planted_null_raw(scratch: Path) -> dict[str, str]:
    _, paths = _planted_files(scratch, bias=False, seed=1)
    result = _planted(scratch, paths, paths["head"], seed=1)
    return {"planted_null_raw.json": json_text(result)}


def planted_bias_raw_mean(scratch: Path) -> dict[str, str]:
    _, paths = _planted_files(scratch, seed=2)
    result = _planted(scratch, paths, paths["head"], seed=2, ablation="mean", chunk_rows=512)
    return {"planted_bias_raw_mean.json": json_text(result)}


def _l2_bias(world: Any) -> float:
    """For the raw head's direction on L2-normalised embeddings: a bias centring the margins."""
    x = world.embeddings / np.linalg.norm(world.embeddings, axis=1, keepdims=True)
    return -float(np.median(x @ world.head.weight.numpy()))


def _l2_head(world: Any, path: Path) -> Path:
    """A head on L2-normalised embeddings: the raw head's direction, its bias centring margins."""
    from audit.fairness.classifiers import LinearHead, save_head

    return save_head(LinearHead(world.head.weight.clone(), _l2_bias(world), "l2"), path)


def planted_bias_l2(scratch: Path) -> dict[str, str]:
    world, paths = _planted_files(scratch)
    head = _l2_head(world, scratch / "l2head.npz")
    zero = _planted(scratch, paths, head, classifier_input="l2")
    mean = _planted(scratch, paths, head, classifier_input="l2", ablation="mean", seed=4)
    return {
        "planted_bias_l2.json": json_text(zero),
        "planted_bias_l2_mean.json": json_text(mean),
    }


class _TwoScores(torch.nn.Module):
    """The planted linear head as a TorchScript module returning ``[B, 2]`` scores."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w[:, None].clone())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x @ self.w + self.b], dim=1)


def planted_bias_torchscript(scratch: Path) -> dict[str, str]:
    import warnings

    world, paths = _planted_files(scratch)
    path = scratch / "head.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_TwoScores(world.head.weight, world.head.bias)), str(path))
    zero = _planted(scratch, paths, path, chunk_rows=512)
    mean = _planted(scratch, paths, path, ablation="mean", shortlist=6, unnamed_top=4)
    return {
        "planted_bias_torchscript.json": json_text(zero),
        "planted_bias_torchscript_mean.json": json_text(mean),
    }


def planted_bias_probe(scratch: Path) -> dict[str, str]:
    _, paths = _planted_files(scratch, with_split=True, seed=3)
    result = _planted(scratch, paths, "probe", seed=3, probe_c=0.5)
    return {"planted_bias_probe.json": json_text(result)}


def planted_integrity_failure(scratch: Path) -> dict[str, str]:
    from audit.concepts import save_bank
    from audit.sae import sae_fingerprint
    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=2000, seed=0)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():  # a dictionary that no longer spans the data
        q = torch.linalg.qr(torch.randn(48, 48, generator=generator, dtype=torch.float64))[0]
        world.sae.W_dec.copy_(q[: world.sae.n_latents].float())
    world.bank.sae["fingerprint"] = sae_fingerprint(world.sae)
    paths = save_planted_world(world, scratch / "world")
    save_bank(world.bank, paths["bank"])
    result = _planted(scratch, paths, paths["head"])
    out = {"planted_integrity_failure.json": json_text(result)}
    out["planted_integrity_failure.md"] = reports(result)["md"]
    out["planted_integrity_failure.check.json"] = rejudged(result, scratch, LENIENT_GATE)
    return out


def planted_more_paths(scratch: Path) -> dict[str, str]:
    """Paths the first cases leave out: an L2 head over several chunks with mean ablation, a
    TorchScript module on L2-normalised inputs, a probe on L2 inputs with a seeded split."""
    world, paths = _planted_files(scratch, seed=5)
    head = _l2_head(world, scratch / "l2head.npz")
    l2 = _planted(
        scratch, paths, head, classifier_input="l2", ablation="mean", seed=5, chunk_rows=512
    )
    path = scratch / "head.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.script(_TwoScores(world.head.weight, _l2_bias(world)))
        torch.jit.save(module, str(path))
    scripted = _planted(scratch, paths, path, classifier_input="l2", chunk_rows=700, seed=6)
    probe = _planted(scratch, paths, "probe", classifier_input="l2", seed=7, probe_c=2.0)
    return {
        "planted_l2_chunked.json": json_text(l2),
        "planted_torchscript_l2.json": json_text(scripted),
        "planted_probe_seeded_split.json": json_text(probe),
    }


def planted_groups(scratch: Path) -> dict[str, str]:
    """A three-valued attribute, and a target × attribute cell with no rows."""
    from tests.fairness.planted import planted_bias_world, save_planted_world

    world = planted_bias_world(n_samples=2000, seed=8)
    rng = np.random.default_rng(0)
    blond = world.labels["Blond_Hair"] == 1
    world.labels["Blond_Hair"] = np.where(blond, "blond", rng.choice(["dark", "red"], len(blond)))
    paths = save_planted_world(world, scratch / "three")
    three = _planted(scratch, paths, paths["head"], seed=8, ablation="mean")
    world = planted_bias_world(n_samples=2000, seed=9)
    keep = ~((world.labels["Male"] == 1) & (world.labels["Blond_Hair"] == 1)).to_numpy()
    world.embeddings = world.embeddings[keep]
    world.labels = world.labels[keep].reset_index(drop=True)
    paths = save_planted_world(world, scratch / "empty")
    empty = _planted(scratch, paths, paths["head"], seed=9)
    return {
        "planted_three_values.json": json_text(three),
        "planted_empty_cell.json": json_text(empty),
    }


def planted_sae_architectures(scratch: Path) -> dict[str, str]:
    """The planted dictionary as a TopK SAE (k = 6: the code depends on the row's top k) and as
    a BatchTopK SAE with per-latent thresholds."""
    import dataclasses

    from audit.sae import build_sae, sae_fingerprint
    from tests.fairness.planted import planted_bias_world, save_planted_world

    out = {}
    for arch, extra in (("topk", {"k": 6}), ("batchtopk", {"k": 6})):
        world = planted_bias_world(n_samples=2000, seed=10)
        cfg = dataclasses.replace(world.sae.cfg, arch=arch, k_list=None, **extra)
        sae = build_sae(cfg)
        sae.load_state_dict(world.sae.state_dict(), strict=False)
        if arch == "batchtopk":
            with torch.no_grad():
                sae.threshold = torch.linspace(0.0, 0.3, sae.n_latents)
        world.sae = sae.eval()
        world.bank.sae["fingerprint"] = sae_fingerprint(sae)
        paths = save_planted_world(world, scratch / arch)
        result = _planted(scratch, paths, paths["head"], seed=10, ablation="mean")
        out[f"planted_sae_{arch}.json"] = json_text(result)
    return out


CASES = (
    Case("demo", ("demo.json", "demo.html", "demo.xml", "demo.md", "demo.txt",
                  "demo.check.json"), demo_case),
    Case("planted_bias_raw", ("planted_bias_raw.json", "planted_bias_raw.md"), planted_bias_raw),
    Case("planted_null_raw", ("planted_null_raw.json",), planted_null_raw),
    Case("planted_bias_raw_mean", ("planted_bias_raw_mean.json",), planted_bias_raw_mean),
    Case("planted_bias_l2", ("planted_bias_l2.json", "planted_bias_l2_mean.json"),
         planted_bias_l2),
    Case("planted_bias_torchscript",
         ("planted_bias_torchscript.json", "planted_bias_torchscript_mean.json"),
         planted_bias_torchscript),
    Case("planted_bias_probe", ("planted_bias_probe.json",), planted_bias_probe),
    Case("planted_more_paths",
         ("planted_l2_chunked.json", "planted_torchscript_l2.json",
          "planted_probe_seeded_split.json"), planted_more_paths),
    Case("planted_groups", ("planted_three_values.json", "planted_empty_cell.json"),
         planted_groups),
    Case("planted_sae_architectures", ("planted_sae_topk.json", "planted_sae_batchtopk.json"),
         planted_sae_architectures),
    Case("planted_integrity_failure",
         ("planted_integrity_failure.json", "planted_integrity_failure.md",
          "planted_integrity_failure.check.json"), planted_integrity_failure),
)  # fmt: skip
