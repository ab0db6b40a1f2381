"""Naming quality in the demo world, text-only naming against image-grounded naming, and the
time naming takes at CLIP scale.

    python benchmarks/naming_quality.py [--demo reports/demo] [--seeds 0,1,2,3,4] [--json FILE]
                                        [--expansion E [--sae-seeds 0,1,2]] [--oracle]
    python benchmarks/naming_quality.py --scale [--latents 6144] [--dim 768] [--vocab 20000]
                                        [--probe 20000] [--naive]

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

``--expansion E`` names the latents of an SAE trained on the demo's corpus with the demo's
settings but ``E`` latents per dimension instead of the demo's SAE; with ``--sae-seeds`` one
SAE per training seed, each SAE's naming seeds reported on its own row and all together (how
much the figures depend on the SAE's training run rather than on the naming). ``--oracle`` measures
what any naming of the latents could reach: per value, with the true labels, the latent that
detects it best and the greedy sum of latents (the naming's core rule, from any latents) that
does, on the SAE and on as many random latents with the same firing rates.

**Scale.** Random SAE, text and image embeddings (the cost does not depend on what they mean):
seconds per stage of :func:`audit.concepts.name_latents` with probe images. ``--naive`` also
times the word responses (every latent against every word, the largest product of the naming)
both ways in this process: the product's factorised ``cov(z, x̂) · (t̂_w − t̄)`` and the
image-by-image computation it replaces (every probe image's similarity to every word, centred,
then each latent's covariance with each word's column), with their largest difference and how
often they pick the same best word; and every latent's ranks over those images (behind every
AUC) by ``topk`` of the values above zero against sorting whole columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

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
from audit.concepts.auc import auc, auc_table, average_ranks
from audit.concepts.naming import gather_evidence
from audit.data import world

GOOD_AUC = 0.9
SCALE_FIRING_RATE = 0.04


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
        "corpus_store": paths["corpus_store"],
    }


def retrain_sae(data: dict, out: Path, expansion: int, seed: int) -> float:
    """Replace the demo's SAE by one trained on the same corpus with the demo's settings but
    ``expansion`` latents per dimension (how the naming depends on the dictionary's size);
    returns its FVU on the corpus."""
    from audit.demo_steps import DemoSettings, train_demo_sae
    from audit.sae import load_sae

    settings = dataclasses.replace(DemoSettings(), sae_expansion=expansion, seed=seed)
    sae_dir = out / f"sae-x{expansion}-seed{seed}"
    sae_dir.mkdir(parents=True, exist_ok=True)
    trained = train_demo_sae(Path(data["corpus_store"]), sae_dir, settings, device="cpu")
    data["sae"] = load_sae(sae_dir).eval()
    print(f"SAE: {data['sae'].W_dec.shape[0]} latents ({expansion}x), trained in {sae_dir}")
    return float(trained["fvu"])


def evaluation_split(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seed's halves of the corpus: (the probe the naming sees, the evaluation half)."""
    order = np.random.default_rng([seed, 7]).permutation(rows)
    return np.sort(order[: rows // 2]), np.sort(order[rows // 2 :])


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
    probe, held = evaluation_split(len(x), seed)
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


COUNT_KEYS = ("concepts", "latents", "wrong_polarity")  # whole numbers in the tables


def spread_cell(values: list[float], key: str) -> str:
    """``mean (min–max)`` of one figure over runs, whole numbers for the counts."""
    array = np.array(values, dtype=float)
    fmt = "{:.0f}" if key in COUNT_KEYS else "{:.3f}"
    return f"{fmt.format(array.mean())} ({fmt.format(array.min())}–{fmt.format(array.max())})"


def report(results: dict[Any, dict[str, dict]], list_misses: bool = True) -> None:
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
        cells = [spread_cell([results[s][m][k] for s in results], k) for k in keys]
        print(f"| {m} | " + " | ".join(cells) + " |")
    for s, per in results.items():
        for m, r in per.items():
            if r["bad"] and list_misses:
                print(f"seed {s} {m}: below AUC {GOOD_AUC}: {r['bad']}")


def report_per_sae(per_sae: dict[int, dict]) -> None:
    """The image naming per SAE training seed (mean and range over its naming seeds), then
    every row of :func:`report` over all SAEs and naming seeds together."""
    keys = ("precision", "recall", "recall_correct", "recall_seen", "wrong_polarity")
    print("| SAE seed | FVU | " + " | ".join(f"image {k}" for k in keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for sae_seed, trained in per_sae.items():
        runs = trained["seeds"].values()
        cells = [spread_cell([r["image"][k] for r in runs], k) for k in keys]
        print(f"| {sae_seed} | {trained['fvu']:.4f} | " + " | ".join(cells) + " |")
    print(f"\nall {len(per_sae)} SAEs together:")
    pooled = {(a, b): r for a, t in per_sae.items() for b, r in t["seeds"].items()}
    report(pooled, list_misses=False)


# ------------------------------------------------------------------------------------------
# What any naming of these latents can reach
# ------------------------------------------------------------------------------------------

ORACLE_CANDIDATES = 60  # latents, by single AUC on the probe half, that a sum may draw from


def label_oracle(
    z_fit: torch.Tensor, z_eval: torch.Tensor, y_fit: np.ndarray, y_eval: np.ndarray
) -> dict[int, tuple[float, float, int]]:
    """With the true labels (``y_*`` ``[rows, values]``), per value: the evaluation AUC of the
    latent that detects it best on the probe half, and of the greedy sum (the naming's own core
    rule, drawing from any latent) built on the probe half: ``(single, sum, latents in sum)``."""
    fit_targets = torch.as_tensor(y_fit)
    single = np.nan_to_num(auc_table(average_ranks(z_fit), fit_targets).numpy(), nan=0.5)
    out = {}
    for value in range(y_fit.shape[1]):
        candidates = np.argsort(-single[:, value], kind="stable")[:ORACLE_CANDIDATES]
        members = grouping.greedy_members(z_fit, fit_targets[:, value], candidates)
        eval_target = torch.as_tensor(y_eval[:, value])
        out[value] = (
            auc(z_eval[:, int(candidates[0])], eval_target),
            auc(z_eval[:, members].sum(1), eval_target),
            len(members),
        )
    return out


def oracle_seed(data: dict, seed: int) -> dict[str, dict[str, list[float]]]:
    """Per value, the label oracle on the SAE's latents and on as many random latents
    ``ReLU(x̃·r − b)`` firing as often (the naming's own chance model)."""
    sae, x = data["sae"], data["x"]
    labels_all = truth(data["meta"])
    values = list(labels_all)
    y = np.stack([labels_all[v] for v in values], axis=1)
    fit, held = evaluation_split(len(x), seed)
    x_fit, x_eval = torch.as_tensor(x[fit]), torch.as_tensor(x[held])
    probe = images.Probe(
        x_fit, x_eval, images.encode(sae, x_fit, 4096), images.encode(sae, x_eval, 4096), len(x)
    )
    random_fit, random_eval = images.random_latents(probe, sae, probe.z_fit.shape[1], seed)
    pools = {"sae": (probe.z_fit, probe.z_hold), "random": (random_fit, random_eval)}
    found = {}
    for pool, (z_fit, z_eval) in pools.items():
        per_value = label_oracle(z_fit, z_eval, y[fit], y[held])
        found[pool] = {v: list(per_value[i]) for i, v in enumerate(values)}
    return found


def oracle_report(results: dict[int, dict[str, dict[str, list[float]]]]) -> None:
    seeds = list(results)
    values = list(results[seeds[0]]["sae"])
    print(
        "| value | SAE: best latent | SAE: label-chosen sum (latents) | random: best latent | random: label-chosen sum (latents) |"
    )
    print("|---|---|---|---|---|")
    for v in values:
        cells = []
        for pool in ("sae", "random"):
            single, total, size = (
                np.mean([results[s][pool][v][i] for s in seeds]) for i in range(3)
            )
            cells += [f"{single:.3f}", f"{total:.3f} ({size:.1f})"]
        print(f"| {v} | " + " | ".join(cells) + " |")
    for pool in ("sae", "random"):
        for i, what in ((0, "best latent"), (1, "label-chosen sum")):
            counts = [sum(r[i] >= GOOD_AUC for r in results[s][pool].values()) for s in seeds]
            print(
                f"{pool} {what}: values at AUC >= {GOOD_AUC}: mean {np.mean(counts):.1f} of "
                f"{len(values)} (min {min(counts)}, max {max(counts)}); as recall "
                f"{np.mean(counts) / len(values):.3f}"
            )


# ------------------------------------------------------------------------------------------
# Scale
# ------------------------------------------------------------------------------------------


def responses_against_naive(
    sae: Any, x: np.ndarray, texts: np.ndarray, settings: ImageNamingSettings
) -> None:
    """The latents × words responses on the probe's fitting half, factorised and image by image,
    and every latent's ranks over those images, by ``topk`` of the values above zero and by
    sorting whole columns."""
    probe = images.make_probe(sae, x, settings)
    n = probe.z_fit.shape[1]
    directions = images.word_directions(texts)
    started = time.perf_counter()
    covariance = images.activation_covariance(probe.z_fit, probe.unit_fit, settings.chunk_rows)
    fast = covariance @ directions.T  # [n, d] × [d, V]
    fast_seconds = time.perf_counter() - started

    started = time.perf_counter()
    unit_texts = torch.nn.functional.normalize(torch.as_tensor(texts), dim=1)
    similarity = probe.unit_fit @ unit_texts.T  # [N, V]: every image against every word
    similarity -= similarity.mean(1, keepdim=True)  # ŝ_w(x): centred over the vocabulary
    similarity -= similarity.mean(0, keepdim=True)
    z = probe.z_fit - probe.z_fit.mean(0)
    naive = z.T @ similarity / (z.shape[0] - 1)  # [n, N] × [N, V]
    naive_seconds = time.perf_counter() - started

    started = time.perf_counter()
    sparse_ranks = [average_ranks(probe.z_fit[:, lo : lo + 1024]) for lo in range(0, n, 1024)]
    sparse_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sorted_ranks = [
        average_ranks(probe.z_fit[:, lo : lo + 1024], sparse=False) for lo in range(0, n, 1024)
    ]
    sorted_seconds = time.perf_counter() - started
    same_ranks = all(torch.equal(a, b) for a, b in zip(sparse_ranks, sorted_ranks, strict=True))
    print(
        f"  ranks of every latent's codes: values above zero only {sparse_seconds:.2f} s, "
        f"whole columns sorted {sorted_seconds:.2f} s, ratio "
        f"{sorted_seconds / sparse_seconds:.1f}×; identical: {same_ranks}"
    )

    difference = float((fast - naive).abs().max() / naive.abs().max().clamp_min(1e-30))
    same = float((fast.argmax(1) == naive.argmax(1)).float().mean())
    rows, words = probe.z_fit.shape[0], texts.shape[0]
    print(
        f"  responses ({fast.shape[0]} latents × {words} words, {rows} images): factorised "
        f"{fast_seconds:.2f} s, image by image {naive_seconds:.2f} s, "
        f"ratio {naive_seconds / fast_seconds:.1f}×; largest difference {difference:.1e} of the "
        f"largest response; same best word for {same:.4f} of the latents"
    )


def scale(latents: int, dim: int, vocab_size: int, probe: int, naive: bool = False) -> None:
    from audit.sae import SAEConfig, build_sae, matryoshka_k_list

    rng = np.random.default_rng(0)
    sae = build_sae(
        SAEConfig(
            arch="matryoshka", d_in=dim, n_latents=latents, k_list=matryoshka_k_list(latents, 64)
        )
    ).eval()
    vocab = Vocabulary([f"word{i}" for i in range(vocab_size)], ["random"], "")
    texts = rng.standard_normal((vocab_size, dim)).astype(np.float32)
    x = rng.standard_normal((probe, dim)).astype(np.float32)
    with torch.no_grad():
        # Each latent fires on about SCALE_FIRING_RATE of the images, as a trained SAE's do (a
        # few hundred of 6 144 on per row). Random encoder columns give pre-activations of
        # s.d. 0.1, so a fixed bias (−0.5 before 2026-12-05) silenced every latent.
        sample = sae.pre_activations(sae.preprocess(torch.as_tensor(x[:2048])))
        sae.b_enc -= torch.quantile(sample, 1 - SCALE_FIRING_RATE, dim=0)
        active = float((sae.encode(torch.as_tensor(x[:2048])) > 0).sum(1).float().mean())
    settings = ImageNamingSettings(max_probe=probe)
    print(
        f"{latents} latents ({active:.0f} active per image), d={dim}, {vocab_size} words, "
        f"{probe} probe images, torch threads {torch.get_num_threads()}"
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
    if naive:
        responses_against_naive(sae, x, texts, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=None, help="output of msae-audit demo")
    parser.add_argument("--out", type=Path, default=Path("reports/naming_quality"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument(
        "--expansion",
        type=int,
        default=None,
        help="train an SAE with this many latents per dimension on the demo's corpus instead",
    )
    parser.add_argument(
        "--sae-seeds", default="0", help="training seeds of those SAEs (comma-separated)"
    )
    parser.add_argument(
        "--oracle", action="store_true", help="what any naming of the latents can reach"
    )
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--probe", type=int, default=20000)
    parser.add_argument(
        "--naive",
        action="store_true",
        help="with --scale: also the responses image by image and the ranks by full sorts",
    )
    args = parser.parse_args()
    if args.scale:
        scale(args.latents, args.dim, args.vocab, args.probe, args.naive)
        return
    several = "," in args.sae_seeds
    if several and (args.expansion is None or args.oracle):
        parser.error("several --sae-seeds need --expansion, and not --oracle")
    data = load_demo(args.demo, args.out)
    naming_seeds = [int(s) for s in args.seeds.split(",")]
    if several:
        per_sae = {}
        for sae_seed in (int(s) for s in args.sae_seeds.split(",")):
            fvu = retrain_sae(data, args.out, args.expansion, sae_seed)
            per_sae[sae_seed] = {"fvu": fvu, "seeds": {s: run_seed(data, s) for s in naming_seeds}}
        report_per_sae(per_sae)
        if args.json is not None:
            args.json.write_text(json.dumps(per_sae, indent=1))
        return
    if args.expansion is not None:
        retrain_sae(data, args.out, args.expansion, int(args.sae_seeds))
    if args.oracle:
        found = {s: oracle_seed(data, s) for s in naming_seeds}
        oracle_report(found)
        if args.json is not None:
            args.json.write_text(json.dumps(found, indent=1))
        return
    results = {s: run_seed(data, s) for s in naming_seeds}
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
