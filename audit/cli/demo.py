"""``msae-audit demo``: the offline end-to-end run on the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from audit.cli.app import app, console, err_console
from audit.cli.options import command_options, device_option, option, quiet_option
from audit.cli.progress import Bars
from audit.demo import DemoSettings


@dataclass(frozen=True)
class DemoOptions:
    out: Path = option(Path("reports/demo"), "--out", help="Output folder.")
    seed: int = option(
        DemoSettings.seed, "--seed", help="Seed of the world, the SAE and the probe."
    )
    train_scenes: int = option(
        DemoSettings.n_train, "--train-scenes", help="Scenes in the train split."
    )
    test_scenes: int = option(
        DemoSettings.n_test, "--test-scenes", help="Scenes in the test split."
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
    """Offline end to end: tiny CLIP → world with a planted shortcut → store → MSAE → concept
    bank → probe → audit."""
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
    s = ctx.summary
    zero_shot = s["tiny_clip"]["zero_shot_accuracy"]
    probe = s["probe"]
    bank = s["bank"]
    sae = s["sae"]
    table = Table(title="msae-audit demo", show_header=False, title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("result")
    fresh = ctx.timings.get("tiny_clip", 0.0) > 5.0
    table.add_row(
        "tiny CLIP",
        ("trained now" if fresh else "loaded from the cache")
        + f" (training took {s['tiny_clip']['train_seconds']:.0f} s); zero-shot accuracy on "
        "held-out renders: " + ", ".join(f"{k} {v:.0%}" for k, v in zero_shot.items()),
    )
    table.add_row(
        "world",
        f"{ctx.settings.n_train} train / {ctx.settings.n_test} test scenes; planted shortcut: "
        f"'{ctx.planted_concept}' ({ctx.settings.p_red_given_circle_train:.0%} of train circles, "
        f"{ctx.settings.p_red_given_square_train:.0%} of train squares; test balanced)",
    )
    table.add_row(
        "stores",
        escape(f"corpus of {ctx.settings.n_corpus} scenes (SAE training); task {ctx.store}"),
    )
    table.add_row(
        "MSAE",
        f"{sae['n_latents']} latents, k-list {sae['k_list']}, {sae['steps']} steps in "
        f"{sae['seconds']:.1f} s on the corpus, FVU {sae['fvu']:.3f}, dead {sae['dead_latents']}",
    )
    table.add_row(
        "concept bank",
        f"{bank['validated']} of {bank['latents']} latents validated "
        f"({bank['unique_validated_names']} distinct names; threshold {bank['threshold']:.3f}); "
        f"'{ctx.planted_concept}' → latents {bank['planted_concept_latents']}",
    )
    groups = ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in probe["test_groups"].items())
    table.add_row(
        "probe (circle vs square)",
        f"train acc {probe['train_accuracy']:.1%}, test acc {probe['test_accuracy']:.1%}, "
        f"worst group {probe['worst_group_accuracy']:.1%} ({groups})",
    )
    a = s["audit"]
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
    table.add_row(
        "audit",
        f"gate verdict {a['verdict']} (exit code {a['exit_code']} for `msae-audit audit`); "
        + found,
    )
    d = s["discover"]
    table.add_row(
        "discover (no is_red column)",
        escape(
            f"rank 1 '{d['top_concept']}'; flagged: {', '.join(d['flagged']) or 'none'}"
            + (
                f"; '{planted}' ranked {d['planted_concept_rank']}"
                if d["planted_concept_rank"]
                else ""
            )
        ),
    )
    own = s.get("image_model")
    if own:
        table.add_row(
            "your own model (CNN on images)",
            f"surrogate agrees {own['surrogate_agreement']:.1%}; top concept by ΔWGA "
            f"'{own['top_concept']}' ({'flagged' if own['top_concept_flagged'] else 'not flagged'}"
            f"), by sliced errors '{own['top_sliced_error']}'; {own['reports'].get('html', '')}",
        )
    reports = ", ".join([*a["reports"].values(), *d["reports"].values()])
    table.add_row(
        "outputs", escape(f"{reports}; {ctx.json_path} (paths of store, SAE, bank, head)")
    )
    table.add_row("time", ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()))
    return table
