"""The goals judged from a gpu_check summary, and its Markdown rendering (see gpu_check.py)."""

from __future__ import annotations

from typing import Any

GOALS = {
    "init": ("training step vs the per-level implementation, at initialisation", 3.0),
    "trained": ("training step vs the per-level implementation, trained-like (4 % active)", 8.0),
    "cc3m": ("the paper's CC3M run (2 905 936 × 30 epochs), projected, seconds", 300.0),
    "embed": ("embedding, ViT-L-14 fp16, images/s", 2000.0),
}


def _figures(summary: dict, part: str) -> dict | None:
    entry = summary["parts"].get(part) or {}
    return entry.get("figures")


def _speedup(train: dict | None, regime: str) -> float | None:
    try:
        return float(train["bare_loops"][regime]["fp32"]["speedup_vs_naive"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def goals(summary: dict) -> list[dict[str, Any]]:
    """Each goal with its target, the measured figure (None: not measured) and whether it is met."""
    train, embed = _figures(summary, "train"), _figures(summary, "embed")
    projection = (train or {}).get("cc3m_projection", {})
    measured = {
        "init": _speedup(train, "init"),
        "trained": _speedup(train, "active=0.04"),
        "cc3m": projection.get("train_sae_initial_density_seconds"),
        "embed": ((embed or {}).get("ours") or {}).get("images_per_second"),
    }
    notes = {
        "init": f"bf16: {_bf16(train, 'init')}",
        "trained": f"20 % active: {_speedup(train, 'active=0.2')}; bf16: {_bf16(train, 'active=0.04')}",
        "cc3m": "train_sae throughput at initial density (a run gets sparser, so faster); at "
        f"trained-like sparsity (bare step, 4 % / 20 % active): "
        f"{projection.get('bare_step_active=0.04_seconds')} / "
        f"{projection.get('bare_step_active=0.2_seconds')} s",
        "embed": "JPEG decoding included; the model alone: "
        f"{_round((embed or {}).get('model_only_images_per_second'))} images/s",
    }
    out = []
    for key, (what, target) in GOALS.items():
        value = measured[key]
        met = None if value is None else (value < target if key == "cc3m" else value >= target)
        out.append({"goal": what, "target": target, "measured": _round(value), "met": met,
                    "note": notes[key]})  # fmt: skip
    return out


def _bf16(train: dict | None, regime: str) -> float | None:
    try:
        return float(train["bare_loops"][regime]["bf16"]["speedup_vs_naive"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


def _round(value: Any, digits: int = 1) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def render_markdown(summary: dict) -> str:
    env = _figures(summary, "environment") or {}
    machine = env.get("nvidia_smi") or env.get("gpu") or env.get("processor", "?")
    lines = [
        f"# GPU check ({summary['mode']}): {machine}",
        "",
        f"{env.get('date_utc', '?')} UTC; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
        f"open_clip {env.get('open_clip')}, Python {env.get('python')}, {env.get('cpus')} CPUs; "
        f"all parts {summary['seconds']} s.",
        "",
    ]
    if summary["mode"] == "smoke":
        lines += ["Smoke mode: toy sizes, so the goals below are not judged on their "
                  "configuration.", ""]  # fmt: skip
    lines += [
        "## Goals",
        "",
        "| goal | target | measured | met | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for g in summary["goals"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['target']:g} | {g['measured']} | {met} | {g['note']} |")
    lines += [
        "",
        "## Parts",
        "",
        "| part | status | seconds | error |",
        "| --- | --- | --- | --- |",
    ]
    for name, entry in summary["parts"].items():
        error = (entry.get("error") or "").replace("|", "/")
        lines.append(f"| {name} | {entry['status']} | {entry.get('seconds', '')} | {error} |")
    lines += _training(_figures(summary, "train"))
    lines += _others(summary)
    return "\n".join(lines) + "\n"


def _training(train: dict | None) -> list[str]:
    if not train:
        return []
    c, t = train["config"], train["train_sae"]
    lines = [
        "",
        f"## Training (d {c['d']}, n {c['n']}, {c['weighting'].upper()}, k levels "
        f"{train['k_list'][0]} … {train['k_list'][-1]}, batch {c['batch']}; {train['device_name']})",
        "",
        f"`train_sae`, {t['steps']} steps: {t['samples_per_second']:,} samples/s overall, "
        f"{t['steady_samples_per_second']:,} after the first step; peak {t['peak_memory_mib']} MiB.",
        "",
        "| regime | active per row (mean / max) | precision | ours ms | naive ms | speed-up | "
        "ours step peak MiB (estimate) | naive step peak MiB | |Δloss| / grad rel. Δ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for regime, r in train["bare_loops"].items():
        for precision in train["precisions"]:
            p = r[precision]
            ours = 1000 * c["batch"] / p["ours_samples_per_second"]
            naive = 1000 * c["batch"] / p["naive_samples_per_second"]
            lines.append(
                f"| {regime} | {r['active_mean']:.0f} / {r['active_max']} | {precision} | "
                f"{ours:.1f} | {naive:.1f} | {p['speedup_vs_naive']}× | "
                f"{p['ours_step_peak_mib']} ({r.get('ours_step_peak_estimate_mib')}) | "
                f"{p['naive_step_peak_mib']} | {r['loss_abs_diff']:.1e} / {r['grad_rel_diff']:.1e} |"
            )
    proj = train.get("cc3m_projection", {})
    lines += ["", "CC3M projection (seconds): " + ", ".join(f"{k} {v}" for k, v in proj.items())]
    return lines


def _others(summary: dict) -> list[str]:
    lines: list[str] = []
    cal = _figures(summary, "calibrate")
    if cal:
        parts = ", ".join(f"{s['per_row']} per row: factor {s['factor']}" for s in cal["sparse"])
        lines += ["", "## Sparse vs dense decode", "",
                  f"[{cal['batch']}, {cal['n']}] @ [{cal['n']}, {cal['d']}]: dense "
                  f"{cal['dense_seconds'] * 1000:.2f} ms; CSR {parts} (the planner assumes "
                  f"{cal['planner_factor']})."]  # fmt: skip
    emb = _figures(summary, "embed")
    if emb:
        lines += ["", "## Embedding", "",
                  f"{emb['model']} ({emb['precision']}, batch {emb['batch_size']}, "
                  f"{emb['workers']} workers) on {emb['device_name']}: ours "
                  f"{emb['ours']['images_per_second']:,.0f} images/s, naive "
                  f"{emb['naive']['images_per_second']:,.0f}, model alone "
                  f"{_round(emb.get('model_only_images_per_second'))}; peak "
                  f"{emb.get('peak_memory_mib')} MiB."]  # fmt: skip
    for part, title in (("audit", "Audit"), ("eval", "Eval")):
        f = _figures(summary, part)
        if f:
            lines += ["", f"## {title}", "",
                      f"{f['rows']:,} × {f['dim']}, {f['latents']} latents on {f['device_name']}: "
                      f"{f['seconds']} s ({f['rows_per_second']:,} rows/s); peak "
                      f"{f.get('peak_memory_mib')} MiB."]  # fmt: skip
    tests = _figures(summary, "pytest")
    if tests and "tests" in tests:
        lines += ["", "## pytest -m cuda", "",
                  f"{tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
                  f"{tests['skipped']} skipped in {tests['seconds']:.0f} s."]  # fmt: skip
        lines += [f"- `{t['test']}`: {t['message']}" for t in tests["failed_tests"]]
    return lines
