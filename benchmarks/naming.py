"""How long naming takes at the paper's scale: ~37k vocabulary entries against 24k latents.

    python benchmarks/naming.py [--vocab FILE] [--latents 24576] [--dim 768] [--screen auto]
                                [--threshold -1] [--naive]

Directions and text embeddings are random (no CLIP is needed): the cost of naming does not
depend on what the vectors mean. The vocabulary file only sets the number of entries (the
LAION-400M unigram list of the paper's code has 37,444; without it, 37,444 made-up words).
Reports the time of each stage of :func:`audit.concepts.name_latents`: the chunked similarity
search, the random-direction threshold and the self-consistency check.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from audit.concepts import Vocabulary, name_latents, read_vocabulary_file, top_matches
from audit.sae import SAEConfig, build_sae, matryoshka_k_list

DEFAULT_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "vocab" / "laion_400_unigram.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB)
    parser.add_argument("--latents", type=int, default=24576)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--screen", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="Fixed threshold; -1 names every latent, so self-consistency runs for all of them "
        "(the worst case). Default: the random-direction threshold.",
    )
    parser.add_argument("--naive", action="store_true", help="Also time the search in fp32 only.")
    args = parser.parse_args()

    if args.vocab.exists():
        entries = read_vocabulary_file(args.vocab)
        source = str(args.vocab)
    else:
        entries = [f"word{i}" for i in range(37444)]
        source = "made-up words (vocabulary file not found)"
    vocab = Vocabulary(entries, [source], "")
    rng = np.random.default_rng(0)
    texts = rng.standard_normal((len(vocab), args.dim)).astype(np.float32)
    n = args.latents
    sae = build_sae(
        SAEConfig(arch="matryoshka", d_in=args.dim, n_latents=n, k_list=matryoshka_k_list(n, 64))
    ).eval()
    print(
        f"vocabulary: {len(vocab):,} entries ({source}); SAE: {n:,} latents, d={args.dim}; "
        f"torch threads: {torch.get_num_threads()}"
    )
    started = time.perf_counter()
    result = name_latents(
        sae,
        vocab,
        texts,
        bank_name="bench",
        sae_info={"fingerprint": "bench"},
        threshold=args.threshold,
        screen=args.screen,
    )
    total = time.perf_counter() - started
    for stage, seconds in result.seconds.items():
        print(f"  {stage:<18} {seconds:7.2f} s")
    print(f"  {'total':<18} {total:7.2f} s   ({result.bank.extra['summary']['named']} named)")
    if args.naive:
        directions = sae.decoder_directions().detach().numpy()
        started = time.perf_counter()
        top_matches(directions, texts, 6, screen="fp32")
        print(f"  fp32 only search   {time.perf_counter() - started:7.2f} s")


if __name__ == "__main__":
    main()
