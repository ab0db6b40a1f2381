"""Naming quality in the demo world, text-only naming against image-grounded naming, and the
time naming takes at CLIP scale.

    python benchmarks/naming_quality.py [--demo reports/demo] [--seeds 0,1,2,3,4] [--json FILE]
    python benchmarks/naming_quality.py --scale [--latents 6144] [--dim 768] [--vocab 20000]
                                        [--probe 20000]

**Quality.** The demo's corpus (``msae-audit demo``: 8000 scenes whose shape, colour, texture,
size, position and background are known, embedded with the tiny CLIP), its SAE and the world's
vocabulary. Per seed, the corpus is split in halves: one half is the probe the image naming
sees, the other half the evaluation. Each validated concept (its latents summed) is scored by
the AUC with which its activation predicts its name on the evaluation half (for ``no <v>``: the
absence of value ``v``):

* precision: share of validated concepts with AUC ≥ 0.9 (and the same per validated latent);
* recall: share of the 26 world words (24 attribute values, 2 markers) with a validated
  concept of that name (and with one whose AUC ≥ 0.9); "seen" restricts to the values the tiny CLIP itself recognises (the
  image–text similarity of the value's word predicts it with AUC ≥ 0.9);
* wrong polarity: validated names whose activation goes the other way (AUC < 0.5).

Rows: ``text`` is the text-only naming (decoder–text cosine, random-direction threshold,
self-consistency); ``image`` the product's image-grounded naming; ``image/soft-wpmi`` and
``image/rank-corr`` the same validation with the word chosen by CLIP-Dissect's soft-WPMI
(Oikarinen & Weng 2023: per-image softmax over the vocabulary with a = 10, top 100 images with
weights 0.998 → 0.97, λ = 1) or by the Spearman correlation between the activation and the
per-image centred similarity.

**Scale.** Random SAE, text and image embeddings (the cost does not depend on what they mean):
seconds per stage of :func:`audit.concepts.name_latents` with probe images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from audit.concepts import (
    ConceptBank,
    ImageNamingSettings,
    Vocabulary,
    grouping,
    images,
    name_latents,
)
from audit.concepts.auc import auc, average_ranks
from audit.concepts.naming import gather_evidence
from audit.data import world

GOOD_AUC = 0.9


# ------------------------------------------------------------------------------------------
# The demo world
# ------------------------------------------------------------------------------------------


def load_demo(demo: Path | None, out: Path) -> dict:
    """The demo's SAE, corpus embeddings with attributes, and the vocabulary's text embeddings."""
    from audit.concepts import load_vocabulary, vocabulary_embeddings
    from audit.encoders import load_clip
    from audit.sae import load_sae
    from audit.store import open_store

    if demo is None:
        from audit.demo import run_demo

        demo = out
        run_demo(demo, log=print)
    paths = json.loads((demo / "demo.json").read_text())["paths"]
    store = open_store(paths["corpus_store"])
    clip = load_clip(paths["model"], paths["pretrained"], device="cpu")
    vocab = load_vocabulary(["world"])
    return {
        "sae": load_sae(paths["sae"]).eval(),
        "x": np.asarray(store.read(), dtype=np.float32),
        "meta": store.metadata,
        "vocab": vocab,
        "texts": vocabulary_embeddings(vocab, clip.encode_texts),
    }


def truth(meta) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Every value a word names (the markers included, "no marker" not: captions never say it)."""
    return {v: (meta[world.attribute_of(v)] == v).to_numpy() for v in world.world_words()}


def seen_values(x: np.ndarray, texts: np.ndarray, vocab: Vocabulary, labels: dict) -> set[str]:
    """Values whose word's image–text similarity predicts them with AUC ≥ 0.9."""
    unit_x = torch.as_tensor(x / np.linalg.norm(x, axis=1, keepdims=True))
    unit_t = torch.as_tensor(texts / np.linalg.norm(texts, axis=1, keepdims=True))
    sims = unit_x @ unit_t.T
    return {
        v
        for v, y in labels.items()
        if auc(sims[:, vocab.entries.index(v)], torch.as_tensor(y)) >= GOOD_AUC
    }


def score_concepts(groups, z: torch.Tensor, labels: dict[str, np.ndarray], seen: set[str]) -> dict:  # type: ignore[no-untyped-def]
    """Precision, recall and polarity of validated concepts on evaluation codes ``z``."""
    rows, latent_hits = [], []
    for g in groups:
        if not g.validated:
            continue
        absent = g.name.startswith("no ")
        value = g.name[3:] if absent else g.name
        y = labels.get(value)
        if y is None:
            rows.append((g.name, float("nan"), value, absent))
            continue
        target = torch.as_tensor(~y if absent else y)
        rows.append((g.name, auc(z[:, list(g.latents)].sum(1), target), value, absent))
        latent_hits += [auc(z[:, j], target) >= GOOD_AUC for j in g.latents]
    good = [r for r in rows if r[1] >= GOOD_AUC]
    named = {r[2] for r in rows if not r[3]}
    correct = {r[2] for r in good if not r[3]}
    return {
        "concepts": len(rows),
        "latents": len(latent_hits),
        "precision": len(good) / max(len(rows), 1),
        "latent_precision": float(np.mean(latent_hits)) if latent_hits else 0.0,
        "recall": len(named) / len(labels),
        "recall_correct": len(correct) / len(labels),
        "recall_seen": len(correct & seen) / max(len(seen), 1),
        "wrong_polarity": sum(r[1] < 0.5 for r in rows),
        "bad": sorted((r[0], round(r[1], 3)) for r in rows if not r[1] >= GOOD_AUC),
        "missed": sorted(set(labels) - correct),  # values without a correct validated concept
    }


# ------------------------------------------------------------------------------------------
# Word choosers compared with the product's response
# ------------------------------------------------------------------------------------------


def soft_wpmi_choice(
    z: torch.Tensor,
    unit_x: torch.Tensor,
    texts: np.ndarray,
    top: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
) -> np.ndarray:
    """CLIP-Dissect's soft-WPMI word for every latent (presence only)."""
    unit_t = torch.as_tensor(texts / np.linalg.norm(texts, axis=1, keepdims=True))
    p_word = torch.softmax(a * unit_x @ unit_t.T, dim=1)  # p(word | image)
    top = min(top, z.shape[0])
    weights = 0.998 - torch.arange(top) / top * (0.998 - 0.97)
    best = torch.topk(z, top, dim=0).indices  # [top, n]
    log_given = torch.stack(
        [
            torch.log1p(weights[:, None] * (p_word[best[:, j]] - 1) + 1e-7 - 0).sum(0)
            for j in range(z.shape[1])
        ]
    )
    log_prior = torch.logsumexp(log_given, dim=0) - np.log(z.shape[1])
    return (log_given - lam * log_prior).argmax(1).numpy()


def rank_corr_choice(
    z: torch.Tensor, unit_x: torch.Tensor, directions: torch.Tensor, absence_factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Word and polarity by the Spearman correlation of activation and centred similarity."""
    rz = average_ranks(z)
    rs = average_ranks(unit_x @ directions.T)
    rz, rs = rz - rz.mean(0), rs - rs.mean(0)
    corr = (rz / rz.norm(dim=0).clamp_min(1e-12)).T @ (rs / rs.norm(dim=0).clamp_min(1e-12))
    high, high_at = corr.max(1)
    low, low_at = corr.min(1)
    absent = -low > absence_factor * high
    return torch.where(absent, low_at, high_at).numpy(), absent.numpy()


def with_choice(
    evidence: grouping.Evidence,
    word: np.ndarray,
    absent: np.ndarray,
    settings: ImageNamingSettings,
    sae,
) -> grouping.Evidence:  # type: ignore[no-untyped-def]
    """The same evidence with another word choice (labels and null for every word)."""
    choice = evidence.choice
    selectivity = np.array(
        [
            images.selectivity_of(evidence.covariance[j], evidence.directions, int(w), bool(a))
            for j, (w, a) in enumerate(zip(word, absent, strict=True))
        ]
    )
    every = np.arange(evidence.directions.shape[0])
    labels = images.zero_shot_labels(
        evidence.probe, evidence.directions, every, settings.label_quantile
    )
    new_choice = images.WordChoice(word, absent, selectivity, choice.responsive)
    return dataclasses.replace(evidence, choice=new_choice, labels=labels)


def run_seed(data: dict, seed: int) -> dict[str, dict]:
    sae, x, vocab, texts = data["sae"], data["x"], data["vocab"], data["texts"]
    labels_all = truth(data["meta"])
    order = np.random.default_rng([seed, 7]).permutation(len(x))
    probe, held = np.sort(order[: len(x) // 2]), np.sort(order[len(x) // 2 :])
    labels = {v: y[held] for v, y in labels_all.items()}
    with torch.no_grad():
        z = sae.encode(torch.as_tensor(x[held])).float()
    seen = seen_values(x[held], texts, vocab, labels)
    info = {"fingerprint": "benchmark"}
    settings = ImageNamingSettings(seed=seed)
    out = {}
    started = time.perf_counter()
    text = name_latents(sae, vocab, texts, bank_name="text", sae_info=info).bank
    out["text"] = score_concepts(text.concept_groups(), z, labels, seen)
    out["text"]["seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    bank: ConceptBank = name_latents(
        sae,
        vocab,
        texts,
        bank_name="image",
        sae_info=info,
        probe_images=x[probe],
        image_settings=settings,
    ).bank
    out["image"] = score_concepts(bank.concept_groups(), z, labels, seen)
    out["image"]["seconds"] = time.perf_counter() - started
    evidence = gather_evidence(sae, vocab, texts, x[probe], settings)
    unit_fit = evidence.probe.unit_fit
    word = soft_wpmi_choice(evidence.probe.z_fit, unit_fit, texts)
    variants = {
        "image/soft-wpmi": (word, np.zeros(len(word), dtype=bool)),
        "image/rank-corr": rank_corr_choice(
            evidence.probe.z_fit, unit_fit, evidence.directions, settings.absence_factor
        ),
    }
    for name, (w, a) in variants.items():
        alt = with_choice(evidence, w, a, settings, sae)
        out[name] = score_concepts(grouping.build_concepts(alt, settings), z, labels, seen)
    return out


def report(results: dict[int, dict[str, dict]]) -> None:
    methods = list(next(iter(results.values())))
    keys = (
        "concepts",
        "latents",
        "precision",
        "latent_precision",
        "recall",
        "recall_correct",
        "recall_seen",
        "wrong_polarity",
    )
    print("| naming | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for m in methods:
        cells = []
        for k in keys:
            values = np.array([results[s][m][k] for s in results], dtype=float)
            fmt = "{:.0f}" if k in ("concepts", "latents", "wrong_polarity") else "{:.3f}"
            low, high = fmt.format(values.min()), fmt.format(values.max())
            cells.append(f"{fmt.format(values.mean())} ({low}–{high})")
        print(f"| {m} | " + " | ".join(cells) + " |")
    for s, per in results.items():
        for m, r in per.items():
            if r["bad"]:
                print(f"seed {s} {m}: below AUC {GOOD_AUC}: {r['bad']}")


# ------------------------------------------------------------------------------------------
# Scale
# ------------------------------------------------------------------------------------------


def scale(latents: int, dim: int, vocab_size: int, probe: int) -> None:
    from audit.sae import SAEConfig, build_sae, matryoshka_k_list

    rng = np.random.default_rng(0)
    sae = build_sae(
        SAEConfig(
            arch="matryoshka", d_in=dim, n_latents=latents, k_list=matryoshka_k_list(latents, 64)
        )
    ).eval()
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)  # sparse-ish codes, as a trained SAE has
    vocab = Vocabulary([f"word{i}" for i in range(vocab_size)], ["random"], "")
    texts = rng.standard_normal((vocab_size, dim)).astype(np.float32)
    x = rng.standard_normal((probe, dim)).astype(np.float32)
    settings = ImageNamingSettings(max_probe=probe)
    print(
        f"{latents} latents, d={dim}, {vocab_size} words, {probe} probe images, "
        f"torch threads {torch.get_num_threads()}"
    )
    started = time.perf_counter()
    result = name_latents(
        sae,
        vocab,
        texts,
        bank_name="scale",
        sae_info={"fingerprint": "x"},
        probe_images=x,
        image_settings=settings,
    )
    for stage, seconds in result.seconds.items():
        print(f"  {stage:<22} {seconds:8.2f} s")
    print(f"  {'total':<22} {time.perf_counter() - started:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=None, help="output of msae-audit demo")
    parser.add_argument("--out", type=Path, default=Path("reports/naming_quality"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--probe", type=int, default=20000)
    args = parser.parse_args()
    if args.scale:
        scale(args.latents, args.dim, args.vocab, args.probe)
        return
    data = load_demo(args.demo, args.out)
    results = {int(s): run_seed(data, int(s)) for s in args.seeds.split(",")}
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
