"""Speed of the CelebA-scale audit on synthetic data (the goal: under 60 s on 2 CPU cores).

200,000 rows, d = 768, n = 6144 latents, a linear head, 1000 bootstrap samples, the relocation
null for up to 200 concepts. The data are sparse mixtures of the SAE's own decoder atoms plus a
CLIP-like common offset and noise, so the integrity check passes honestly; a planted shortcut atom
gives the audit something to find. Prints the total time and the stage breakdown::

    PYTHONPATH=. python benchmarks/audit_speed.py            # full size
    PYTHONPATH=. python benchmarks/audit_speed.py --rows 20000 --latents 1536   # quick
    PYTHONPATH=. python benchmarks/audit_speed.py --device cuda --json audit.json

The **naive** comparison (``--naive-latents K``, default 16) audits latents the way a first
script would: for each latent, set it to its mean over the audited rows in every row's code (the
audit's default mean ablation), decode, add the SAE's residual
(``x' = x + post(dec(z')) − post(dec(z))``), rerun the classifier and recompute the worst-group
accuracy — timed on K latents (the planted spurious one first, whose ΔWGA must equal the
audit's) and extrapolated to all latents. Each chunk is encoded once for the K latents, so a
small K slightly overstates the extrapolation; the naive run has no statistics at all (no
bootstrap, no null), which understates the gap.

Timings on a shared machine are noisy; run it twice and report the faster.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from device_stats import device_name, mib, peak_memory_bytes, reset_peak_memory

from audit.concepts import Concept, ConceptBank, save_bank
from audit.device import resolve_device, tune_cpu_allocator
from audit.fairness.classifiers import LinearHead, save_head
from audit.report import audit_files
from audit.sae import SAEConfig, build_sae, sae_fingerprint, save_sae
from audit.store import write_store


def make_world(
    out: Path, rows: int, dim: int, latents: int, active: int, named: int, seed: int
) -> dict:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    atoms = torch.randn(latents, dim, generator=g)
    # The two planted atoms are orthonormal and orthogonal to every other atom, so crosstalk
    # between the (non-orthogonal) background atoms never reaches them.
    atoms[:2] = torch.linalg.qr(atoms[:2].T)[0].T
    atoms[2:] -= (atoms[2:] @ atoms[:2].T) @ atoms[:2]
    atoms /= atoms.norm(dim=1, keepdim=True)
    y = (rng.random(rows) < 0.5).astype(np.int64)
    blond = (rng.random(rows) < np.where(y == 1, 0.06, 0.3)).astype(np.int64)
    target_atom, spurious_atom = 0, 1
    offset = torch.randn(dim, generator=g)
    offset = 2.0 * offset / offset.norm()
    x = np.empty((rows, dim), dtype=np.float32)
    codes_t = np.clip(
        np.where(y == 1, rng.normal(1.2, 0.35, rows), rng.normal(0.3, 0.3, rows)), 0, None
    )
    for lo in range(0, rows, 8192):
        hi = min(rows, lo + 8192)
        b = hi - lo
        idx = torch.randint(2, latents, (b, active), generator=g)
        val = torch.rand(b, active, generator=g) * 0.8 + 0.4
        xt = (val[:, :, None] * atoms[idx]).sum(1)
        xt += torch.from_numpy(codes_t[lo:hi]).float()[:, None] * atoms[target_atom]
        xt += (
            torch.from_numpy(blond[lo:hi] * rng.uniform(0.7, 1.3, b)).float()[:, None]
            * atoms[spurious_atom]
        )
        xt += 0.02 * torch.randn(b, dim, generator=g)
        x[lo:hi] = (offset + xt / 3.0).numpy()
    cfg = SAEConfig(arch="matryoshka", d_in=dim, n_latents=latents, k_list=(64, 128, 256, 512, 1024, 2048, 4096, latents)[: 1 + int(np.log2(latents / 64))] + ((latents,) if latents not in (64, 128, 256, 512, 1024, 2048, 4096) else ()),
                    embedding_model="synthetic")  # fmt: skip
    sae = build_sae(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(atoms)
        sae.W_enc.copy_(atoms.T)
        sae.b_enc.fill_(-0.3)  # suppresses crosstalk between the non-orthogonal atoms
        sae.b_enc[:2] = 0.0
        sae.set_preprocessing(offset, 3.0)
    sae.eval()
    weight = torch.zeros(dim)
    weight += 3.0 * 4.0 * atoms[target_atom] - 3.0 * 1.3 * atoms[spurious_atom]
    weight += 3.0 * 0.05 * torch.randn(latents, generator=g) @ atoms
    bias = -float(weight @ offset) - 4.0 * 0.75
    head = LinearHead(weight, bias)
    names = [f"concept {k // 2 if k % 7 == 0 else k}" for k in range(named)]  # some shared names
    names[0], names[1] = "masculine face", "blond hair"
    concepts = [
        Concept(
            j,
            names[j] if j < named else None,
            0.3,
            names[j] if j < named else f"word {j}",
            j < named,
            [],
            1,
        )
        for j in range(latents)
    ]
    bank = ConceptBank("bench", {"fingerprint": sae_fingerprint(sae)}, concepts)
    labels = pd.DataFrame({"id": np.arange(rows), "Male": y, "Blond_Hair": blond})
    write_store(out / "store", x, labels, model="synthetic", overwrite=True)
    return {
        "store": out / "store",
        "sae": save_sae(sae, out / "sae"),
        "bank": save_bank(bank, out / "bench.yaml"),
        "head": save_head(head, out / "head.npz"),
    }


def naive_delta_wga(
    paths: dict, latents: list[int], chunk: int = 8192, device: str = "cpu"
) -> tuple[list[float], float]:
    """ΔWGA of mean-ablating each of ``latents`` (set to its mean code over all rows) by
    decode-and-rerun; returns (values, seconds)."""
    from audit.fairness.classifiers import load_classifier
    from audit.sae import load_sae
    from audit.store import open_store

    store = open_store(paths["store"])
    meta = store.metadata
    y = meta["Male"].to_numpy()
    a = meta["Blond_Hair"].to_numpy()
    sae = load_sae(paths["sae"], device=device)
    head = load_classifier(paths["head"], store.dim, "raw").to(sae.W_enc.device)
    cells = [(y == t) & (a == s) for t in (0, 1) for s in (0, 1)]

    def wga(pred: np.ndarray) -> float:
        return min(float((pred[c] == y[c]).mean()) for c in cells if c.any())

    x_all = torch.from_numpy(np.asarray(store.read()))
    start = time.perf_counter()
    with torch.no_grad():
        base = np.concatenate(
            [
                (head.margin(x_all[lo : lo + chunk].to(sae.W_enc.device)) > 0).long().cpu().numpy()
                for lo in range(0, len(y), chunk)
            ]
        )
        before = wga(base)
        code_sum = torch.zeros(sae.n_latents, dtype=torch.float64, device=sae.W_enc.device)
        for lo in range(0, len(y), chunk):  # the mean code: one encoding pass
            code_sum += sae.encode(x_all[lo : lo + chunk].to(sae.W_enc.device)).sum(0).double()
        mean_code = (code_sum / len(y)).to(x_all.dtype)
        predicted: dict[int, list[np.ndarray]] = {j: [] for j in latents}
        for lo in range(0, len(y), chunk):  # encode and decode each chunk once, edit per latent
            x = x_all[lo : lo + chunk].to(sae.W_enc.device)
            z = sae.encode(x)
            residual = x - sae.decode(z)
            for j in latents:
                edited = z.clone()
                edited[:, j] = mean_code[j]
                x_edit = sae.decode(edited) + residual
                predicted[j].append((head.margin(x_edit) > 0).long().cpu().numpy())
        deltas = [wga(np.concatenate(predicted[j])) - before for j in latents]
    return deltas, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--latents", type=int, default=6144)
    parser.add_argument("--active", type=int, default=24, help="atoms per sample")
    parser.add_argument("--named", type=int, default=2000, help="latents with a validated name")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the data in")
    parser.add_argument("--naive-latents", type=int, default=16, help="0 skips the naive run")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (audit and naive run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    if args.keep is None:  # generated data (hundreds of MB at the default size) is not left behind
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    paths = make_world(
        folder, args.rows, args.dim, args.latents, args.active, args.named, args.seed
    )
    print(f"data: {args.rows:,} x {args.dim}, {args.latents} latents, {args.named} named "
          f"(generated in {time.perf_counter() - start:.1f} s, {os.cpu_count()} CPUs visible, "
          f"{torch.get_num_threads()} torch threads)")  # fmt: skip
    load_before = os.getloadavg()[0]
    reset_peak_memory(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    outcome = audit_files(
        paths["store"], sae=paths["sae"], bank=paths["bank"], classifier=paths["head"],
        target="Male", spurious="Blond_Hair", out_dir=folder / "reports", device=str(device),
    )  # fmt: skip
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_memory_bytes(device)
    r = outcome.result
    print(f"audit: {total:.1f} s total  (verdict {r['verdict']}, WGA {r['worst_group_accuracy']:.3f}, "
          f"top concept {r['concepts'][0]['label']!r} ΔWGA {r['concepts'][0]['delta_wga']:+.3f}, "
          f"{r['family']['size']} tested, {r['family']['with_null']} with a null, "
          f"integrity cos {r['integrity']['sae_cosine']:.3f})")  # fmt: skip
    print(
        f"CPU time {cpu:.1f} s over {torch.get_num_threads()} threads; load average before/after: "
        f"{load_before:.1f}/{os.getloadavg()[0]:.1f} (other processes share these cores)"
    )
    for stage, seconds in outcome.timings.items():
        print(f"  {stage:<18} {seconds:6.2f} s")
    print(
        f"rows/s: {args.rows / total:,.0f} rows audited per second over all {args.latents} latents"
        f" on {device} ({device_name(device)})"
        + (f", peak memory {mib(peak):,.0f} MiB" if peak is not None else "")
    )
    figures = {
        "device": str(device),
        "device_name": device_name(device),
        "rows": args.rows,
        "dim": args.dim,
        "latents": args.latents,
        "seconds": round(total, 2),
        "rows_per_second": round(args.rows / total, 1),
        "stages": {stage: round(sec, 3) for stage, sec in outcome.timings.items()},
        "verdict": r["verdict"],
        "peak_memory_mib": mib(peak),
    }
    if args.naive_latents:
        top = r["concepts"][0]
        sample = [int(top["latent"]), *range(2, 1 + args.naive_latents)][: args.naive_latents]
        deltas, seconds = naive_delta_wga(paths, sample, device=str(device))
        naive_total = seconds / len(sample) * args.latents
        figures["naive"] = {
            "latents_timed": len(sample),
            "seconds": round(seconds, 2),
            "extrapolated_seconds": round(naive_total, 1),
            "speedup": round(naive_total / total, 1),
            "delta_wga_naive": deltas[0],
            "delta_wga_audit": top["delta_wga"],
        }
        print(
            f"naive decode-and-rerun: {seconds:.1f} s for {len(sample)} latents → "
            f"{naive_total:,.0f} s extrapolated to {args.latents} (no bootstrap, no null); "
            f"ours {total:.1f} s: {naive_total / total:,.0f}× faster. ΔWGA of latent "
            f"{sample[0]}: naive {deltas[0]:+.6f}, audit {top['delta_wga']:+.6f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
