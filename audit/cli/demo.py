"""``msae-audit demo``: the offline end-to-end run on the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import (
    command_options,
    device_option,
    option,
    quiet_option,
    seed_option,
)
from audit.cli.progress import Bars
from audit.demo import DemoSettings
from audit.demo_steps import MIN_TEST_SCENES, MIN_TRAIN_SCENES


@dataclass(frozen=True)
class DemoOptions:
    out: Path = option(Path("reports/demo"), "--out", help="Output folder.")
    seed: int = seed_option(DemoSettings.seed, help="Seed of the world, the SAE and the probe.")
    train_scenes: int = option(
        DemoSettings.n_train,
        "--train-scenes",
        help=f"Scenes in the train split (at least {MIN_TRAIN_SCENES}).",
    )
    test_scenes: int = option(
        DemoSettings.n_test,
        "--test-scenes",
        help=f"Scenes in the test split (at least {MIN_TEST_SCENES}).",
    )
    device: str = device_option()
    cache_dir: Path | None = option(
        None,
        "--cache-dir",
        help="Where the tiny CLIP is cached.",
        shown="$MSAE_AUDIT_CACHE or ~/.cache/msae-audit",
    )
    quiet: bool = quiet_option()


@app.command(rich_help_panel="Main")
@command_options(DemoOptions)
def demo(opts: DemoOptions) -> None:
    """Offline end to end: tiny CLIP → planted shortcut → store → MSAE → bank → audit.

    The world's images, the SAE, the concept bank, a probe, the audit, discover and an image
    model's audit, all on this machine, with nothing downloaded."""
    from audit.demo import run_demo

    with Bars(opts.quiet) as bars:
        ctx = run_demo(
            opts.out,
            DemoSettings(seed=opts.seed, n_train=opts.train_scenes, n_test=opts.test_scenes),
            log=lambda message: err_console.print(f"[dim]demo:[/] {escape(message)}"),
            cache_dir=opts.cache_dir,
            device=opts.device,
            progress=bars,
        )
    from audit.report.terminal import render_terminal

    render_terminal(ctx.audit_result, console, top=5)
    console.print(summary_table(ctx))


def summary_table(ctx) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title="msae-audit demo", show_header=False, title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("result")
    for step, result in [*_build_rows(ctx), *_audit_rows(ctx)]:
        table.add_row(step, result)
    reports = ", ".join(
        [*ctx.summary["audit"]["reports"].values(), *ctx.summary["discover"]["reports"].values()]
    )
    table.add_row(
        "outputs", escape(f"{reports}; {ctx.json_path} (paths of store, SAE, bank, head)")
    )
    table.add_row("time", ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()))
    return table


def _build_rows(ctx) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The rows of what the demo built: the tiny CLIP, the world, the stores, the SAE, the
    bank and the probe."""
    s = ctx.summary
    zero_shot = s["tiny_clip"]["zero_shot_accuracy"]
    probe, bank, sae = s["probe"], s["bank"], s["sae"]
    fresh = ctx.timings.get("tiny_clip", 0.0) > 5.0
    groups = ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in probe["test_groups"].items())
    return [
        (
            "tiny CLIP",
            ("trained now" if fresh else "loaded from the cache")
            + f" (training took {s['tiny_clip']['train_seconds']:.0f} s); zero-shot accuracy on "
            "held-out renders: " + ", ".join(f"{k} {v:.0%}" for k, v in zero_shot.items()),
        ),
        (
            "world",
            f"{ctx.settings.n_train} train / {ctx.settings.n_test} test scenes; planted shortcut: "
            f"'{ctx.planted_concept}' ({ctx.settings.p_red_given_circle_train:.0%} of train "
            f"circles, {ctx.settings.p_red_given_square_train:.0%} of train squares; test "
            "balanced)",
        ),
        (
            "stores",
            escape(f"corpus of {ctx.settings.n_corpus} scenes (SAE training); task {ctx.store}"),
        ),
        (
            "MSAE",
            f"{sae['n_latents']} latents, k-list {sae['k_list']}, {sae['steps']} steps in "
            f"{sae['seconds']:.1f} s on the corpus, FVU {sae['fvu']:.3f}, "
            f"dead {sae['dead_latents']}",
        ),
        (
            "concept bank",
            f"{bank['validated']} of {bank['latents']} latents validated "
            f"({bank['unique_validated_names']} distinct names; threshold "
            f"{bank['threshold']:.3f}); '{ctx.planted_concept}' → latents "
            f"{bank['planted_concept_latents']}",
        ),
        (
            "probe (circle vs square)",
            f"train acc {probe['train_accuracy']:.1%}, test acc {probe['test_accuracy']:.1%}, "
            f"worst group {probe['worst_group_accuracy']:.1%} ({groups})",
        ),
    ]


def _audit_rows(ctx) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """The rows of the audits: the probe's, discover's and the user's own model's."""
    a, d = ctx.summary["audit"], ctx.summary["discover"]
    planted = ctx.planted_concept
    if a["planted_concept_rank"] is None:
        found = f"the planted concept '{planted}' is not in the bank's named concepts"
    else:
        found = (
            f"planted concept '{planted}' ranked {a['planted_concept_rank']} "
            f"(ΔWGA {a['planted_concept_delta_wga']:+.3f}, "
            + ("flagged" if a["planted_concept_flagged"] else "not flagged")
            + ")"
        )
    direction = a.get("attribute_direction_delta_wga")
    if direction is not None:
        found += f"; the {ctx.spurious_column} direction itself (no SAE) ΔWGA {direction:+.3f}"
    rows = [
        (
            "audit",
            f"gate verdict {a['verdict']} (exit code {a['exit_code']} for `msae-audit audit`); "
            + found,
        ),
        (
            "discover (no is_red column)",
            escape(
                f"rank 1 '{d['top_concept']}'; flagged: {', '.join(d['flagged']) or 'none'}"
                + (
                    f"; '{planted}' ranked {d['planted_concept_rank']}"
                    if d["planted_concept_rank"] and d["top_concept"] != planted
                    else ""
                )
            ),
        ),
    ]
    own = ctx.summary.get("image_model")
    if own:
        flagged = "flagged" if own["top_concept_flagged"] else "not flagged"
        rows.append(
            (
                "your own model (CNN on images)",
                f"surrogate agrees {own['surrogate_agreement']:.1%}; top concept by ΔWGA "
                f"'{own['top_concept']}' ({flagged}), by sliced errors "
                f"'{own['top_sliced_error']}'; {own['reports'].get('html', '')}",
            )
        )
    return rows
