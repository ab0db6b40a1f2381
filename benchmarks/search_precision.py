"""Precision@10 of concept search in the offline demo world: "add colour B", "remove colour A".

    python benchmarks/search_precision.py [--out reports/search_precision] [--demo reports/demo]
                                          [--queries 20] [--values 1,2,4] [--json FILE]
                                          [--world-seed 0] [--corpus 8000] [--epochs 10]

The gallery, SAE and concept bank are the demo's (:mod:`audit.demo`): a corpus of scenes with
independent, uniform attributes (``DemoSettings().n_corpus`` = 8000), embedded with the tiny
CLIP, a Matryoshka SAE trained on it and a bank naming its latents from the world's vocabulary.
``--demo DIR`` reuses the output of ``msae-audit demo --out DIR``; otherwise the same three are
built into ``--out`` (same seeds; 15–30 s on 2 CPU cores once the tiny CLIP is cached), or,
with ``--world-seed``/``--corpus``/``--epochs``, a variant of them.

Queries are freshly rendered scenes (a seed the gallery never used), ``--queries`` of each
colour, embedded from PIL images exactly as ``msae-audit search --image`` does. Each edit goes
through the same functions as ``msae-audit search``: names resolve through the bank
(:func:`audit.search.parse_edits`, every latent carrying the name), values are in units of the
concept's typical code, and the edit keeps the SAE residual. For a query of colour A:

* **add B** (``--set B=v``), for every colour B ≠ A: P(B) is the fraction of the top-10
  neighbours that are colour B; "shape" the fraction that have the query's shape (also
  printed for every pair A, B at the largest value);
* **swap** (``--set B=v --remove A``): the same two fractions;
* **remove A** (``--remove A``): the fraction of the top-10 that are *not* colour A, and the
  mean activation of A's latents over the top-10.

Every figure is a mean over queries (and over A ≠ B for the colour-B rows); "before" is the
unedited query's top-10.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from audit.concepts import ConceptBank, load_bank
from audit.data import world
from audit.sae import load_sae
from audit.sae.base import SparseAutoencoder
from audit.search import (
    ConceptEdit,
    concept_activations,
    edit_embeddings,
    nearest_neighbours,
    parse_edits,
    typical_strength,
)
from audit.store import EmbeddingStore, open_store

QUERY_SEED = 424242  # the demo corpus uses seed 2; the task world seeds 0 and 1


def build(out: Path, settings, log=print) -> tuple[Path, Path, Path]:  # type: ignore[no-untyped-def]
    """The demo's corpus store, SAE and bank, built into ``out``."""
    from audit.data.tinyclip import tiny_clip
    from audit.demo import build_demo_bank, embed_world, make_corpus, train_demo_sae

    clip = tiny_clip(log=log).load(device="cpu")
    log(f"rendering and embedding {settings.n_corpus} scenes")
    manifest = make_corpus(out / "corpus", settings)
    embed_world(manifest, clip, out / "corpus_store", settings)
    log("training the SAE")
    train_demo_sae(out / "corpus_store", out / "sae", settings, device="cpu")
    log("naming latents")
    build_demo_bank(
        out / "sae", out / "concept_banks" / "demo.yaml", clip, probe_images=out / "corpus_store"
    )
    return out / "corpus_store", out / "sae", out / "concept_banks" / "demo.yaml"


def embed_queries(store: EmbeddingStore, per_colour: int, seed: int) -> tuple[torch.Tensor, dict]:
    """``per_colour`` scenes of each colour, rendered, embedded with the gallery's CLIP."""
    import pandas as pd
    from PIL import Image

    from audit.encoders import load_clip

    clip = load_clip(str(store.model), store.pretrained, device="cpu")
    frames = [
        world.sample_scenes(per_colour, seed=seed + i, colour=c)
        for i, c in enumerate(world.COLOURS)
    ]
    scenes = pd.concat(frames, ignore_index=True)
    pixels = world.render_scenes(scenes, seed=seed, image_size=_image_size(clip))
    batch = torch.stack([clip.preprocess(Image.fromarray(p)) for p in pixels])
    vectors = clip.encode_image_batch(batch)
    if store.normalized:
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    attributes = {a: scenes[a].to_numpy() for a in ("colour", "shape")}
    return torch.from_numpy(np.asarray(vectors, dtype=np.float32)), attributes


def _image_size(clip) -> int:  # type: ignore[no-untyped-def]
    size = getattr(clip.model.visual, "image_size", 32)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


class Searcher:
    """The ``msae-audit search`` edit + retrieval path, batched over queries."""

    def __init__(self, sae: SparseAutoencoder, store: EmbeddingStore, bank: ConceptBank) -> None:
        self.sae, self.store, self.bank = sae, store, bank
        self.codes: dict[tuple[int, ...], list[float]] = {}  # a concept's typical code

    def edits(self, set_specs: list[str], remove: list[str]) -> list[ConceptEdit]:
        parsed = parse_edits(self.bank, set_specs, remove)
        edits = [ConceptEdit(n, tuple(latents), s) for n, latents, s in parsed]
        for e in edits:
            if e.latents not in self.codes:
                self.codes[e.latents] = typical_strength(
                    self.sae, self.store, list(e.latents)
                ).tolist()
        return edits

    def top(self, queries: torch.Tensor, edits: list[ConceptEdit], k: int) -> np.ndarray:
        strengths = {
            j: v for e in edits for j, v in zip(e.latents, self.codes[e.latents], strict=True)
        }
        x = edit_embeddings(self.sae, queries, edits, strengths) if edits else queries
        return nearest_neighbours(self.store, x, k)[0]


def measure(
    searcher: Searcher,
    queries: torch.Tensor,
    attrs: dict[str, np.ndarray],
    values: list[float],
    k: int,
) -> dict:
    colours = list(world.COLOURS)
    meta = searcher.store.metadata
    g_colour, g_shape = meta["colour"].to_numpy(), meta["shape"].to_numpy()
    named = {c: searcher.bank.latents_named(c) for c in colours}
    before = searcher.top(queries, [], k)

    def fractions(idx: np.ndarray, rows: np.ndarray, colour: str) -> dict[str, float]:
        """``idx[i]``: the top-k of query ``rows[i]``."""
        return {
            "p": float((g_colour[idx] == colour).mean()),
            "shape": float((g_shape[idx] == attrs["shape"][rows, None]).mean()),
        }

    add: list[dict] = []
    for b in colours:
        rows = np.nonzero(attrs["colour"] != b)[0]
        item: dict = {"colour": b, "latents": named[b], "queries": len(rows)}
        item["before"] = fractions(before[rows], rows, b)
        if named[b]:
            for v in values:
                e_add = searcher.edits([f"{b}={v}"], [])
                idx = searcher.top(queries[rows], e_add, k)
                item[f"add {v:g}"] = fractions(idx, rows, b)
                item[f"add {v:g}"]["by_query_colour"] = {
                    a: float((g_colour[idx[attrs["colour"][rows] == a]] == b).mean())
                    for a in colours
                    if a != b
                }
                # swap: per query colour A (its own --remove A)
                swap_idx = np.empty((len(rows), k), dtype=np.int64)
                for a in colours:
                    sub = np.nonzero(attrs["colour"][rows] == a)[0]
                    if not len(sub):
                        continue
                    remove = [a] if named[a] else []
                    e_swap = searcher.edits([f"{b}={v}"], remove)
                    swap_idx[sub] = searcher.top(queries[rows[sub]], e_swap, k)
                item[f"swap {v:g}"] = fractions(swap_idx, rows, b)
        add.append(item)

    removed: list[dict] = []
    for a in colours:
        rows = np.nonzero(attrs["colour"] == a)[0]
        item = {"colour": a, "latents": named[a], "queries": len(rows)}
        item["before"] = {"p_not": 1.0 - fractions(before[rows], rows, a)["p"]}
        if named[a]:
            e_remove = searcher.edits([], [a])
            after = searcher.top(queries[rows], e_remove, k)
            p_after = fractions(after, rows, a)["p"]
            act = concept_activations(searcher.sae, searcher.store, before[rows].ravel(), e_remove)
            act_after = concept_activations(searcher.sae, searcher.store, after.ravel(), e_remove)
            item["before"]["activation"] = float(act[a].mean())
            item["after"] = {"p_not": 1.0 - p_after, "activation": float(act_after[a].mean())}
        removed.append(item)
    return {"add": add, "remove": removed}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def print_tables(result: dict, values: list[float]) -> None:
    add, removed = result["add"], result["remove"]
    head = ["colour B", "latents", "before"] + [f"add {v:g}" for v in values]
    head += [f"swap {v:g}" for v in values]
    print("\nAdd colour B to a query of another colour: P(B) in the top-10 (shape kept)\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def cell(entry: dict | None) -> str:
        return "—" if entry is None else f"{_pct(entry['p'])} ({_pct(entry['shape'])})"

    for item in [*add, _mean_row(add, values)]:
        cells = [item["colour"], str(len(item["latents"])) if "queries" in item else ""]
        cells += [cell(item["before"])]
        cells += [cell(item.get(f"add {v:g}")) for v in values]
        cells += [cell(item.get(f"swap {v:g}")) for v in values]
        print("| " + " | ".join(cells) + " |")
    v = max(values)
    print(f"\nAdd B (value {v:g}) by query colour A: P(B) in the top-10\n")
    print("| A \\ B | " + " | ".join(i["colour"] for i in add) + " |")
    print("|" + "---|" * (len(add) + 1))
    for a in (i["colour"] for i in add):
        cells = [
            "·" if a == i["colour"] or f"add {v:g}" not in i
            else _pct(i[f"add {v:g}"]["by_query_colour"][a])
            for i in add
        ]  # fmt: skip
        print(f"| {a} | " + " | ".join(cells) + " |")
    print("\nRemove the query's colour A: top-10 NOT colour A (mean activation of A's latents)\n")
    print("| colour A | latents | before | after |")
    print("|---|---|---|---|")
    for item in removed:
        b, a = item["before"], item.get("after")
        print(
            f"| {item['colour']} | {len(item['latents'])} | {_pct(b['p_not'])}"
            + (f" ({b['activation']:.2f})" if "activation" in b else "")
            + " | "
            + (f"{_pct(a['p_not'])} ({a['activation']:.2f})" if a else "—")
            + " |"
        )
    done = [i for i in removed if "after" in i]
    if done:
        before = np.mean([i["before"]["p_not"] for i in done])
        after = np.mean([i["after"]["p_not"] for i in done])
        print(f"| mean (named colours) | | {_pct(before)} | {_pct(after)} |")


def _mean_row(add: list[dict], values: list[float]) -> dict:
    named = [i for i in add if i["latents"]]
    row: dict = {"colour": "mean (named colours)", "latents": []}

    def avg(key: str) -> dict | None:
        entries = [i[key] for i in named if key in i]
        if not entries:
            return None
        return {
            "p": np.mean([e["p"] for e in entries]),
            "shape": np.mean([e["shape"] for e in entries]),
        }

    row["before"] = avg("before")
    for v in values:
        row[f"add {v:g}"] = avg(f"add {v:g}")
        row[f"swap {v:g}"] = avg(f"swap {v:g}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/search_precision"))
    parser.add_argument("--demo", type=Path, help="Reuse `msae-audit demo --out DIR` output.")
    parser.add_argument("--queries", type=int, default=20, help="Query scenes per colour.")
    parser.add_argument("--values", default="1,2,4", help="Edit values (typical strengths).")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=QUERY_SEED)
    parser.add_argument("--world-seed", type=int, default=0, help="DemoSettings.seed.")
    parser.add_argument("--corpus", type=int, default=None, help="Gallery scenes (8000).")
    parser.add_argument("--epochs", type=int, default=None, help="SAE epochs (10).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--json", type=Path, help="Also write the figures as JSON.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    values = [float(v) for v in args.values.split(",")]
    started = time.perf_counter()
    if args.demo is not None:
        gallery, sae_dir = args.demo / "corpus_store", args.demo / "sae"
        bank_path = args.demo / "concept_banks" / "demo.yaml"
    else:
        from dataclasses import replace

        from audit.demo import DemoSettings

        settings = replace(DemoSettings(), seed=args.world_seed)
        if args.corpus is not None:
            settings = replace(settings, n_corpus=args.corpus)
        if args.epochs is not None:
            settings = replace(settings, sae_epochs=args.epochs)
        gallery, sae_dir, bank_path = build(args.out, settings)
    store, sae, bank = open_store(gallery), load_sae(sae_dir).eval(), load_bank(bank_path)
    queries, attrs = embed_queries(store, args.queries, args.seed)
    with torch.no_grad():
        result = measure(Searcher(sae, store, bank), queries, attrs, values, args.top)
    result["settings"] = {
        "gallery": str(gallery),
        "rows": store.count,
        "queries_per_colour": args.queries,
        "values": values,
        "top": args.top,
        "query_seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"gallery {gallery}: {store.count} scenes; SAE {sae.n_latents} latents; bank "
        f"'{bank.name}'; {args.queries} query scenes per colour (seed {args.seed}); top {args.top}"
    )
    print_tables(result, values)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"\n{result['settings']['seconds']} s")


if __name__ == "__main__":
    main()
