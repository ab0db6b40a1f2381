"""The shared progress display: bars with an ETA on a terminal, ~10 lines in a log, silence."""

from __future__ import annotations

import io
import time

from rich.console import Console

from audit.cli.progress import Bars


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


def _run(bars: Bars, steps: int, stage: str = "train", pause: float = 0.0) -> None:
    with bars:
        for step in range(1, steps + 1):
            bars(stage, step, steps, note=f"loss {1 / step:.3f}")
            if pause:
                time.sleep(pause)


def test_a_log_gets_a_line_per_tenth_of_a_long_job():
    console, buffer = _console(terminal=False)
    bars = Bars(console=console)
    assert bars.mode == "lines"
    _run(bars, 1000)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("train: 10% (100/1,000)") and "ETA" in lines[0]
    assert lines[-1].startswith("train: 100% (1,000/1,000)") and "loss 0.001" in lines[-1]


def test_each_stage_reports_on_its_own_and_a_jump_prints_once():
    console, buffer = _console(terminal=False)
    with Bars(console=console) as bars:
        bars.stage("embed")(5, 10)
        bars("name", 30, 30)
        bars.stage("embed")(10, 10)
        bars("unknown size", 3, 0)  # no total: nothing to report as a fraction
    lines = buffer.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["embed", "name", "embed"], lines
    assert lines[0].startswith("embed: 50% (5/10)") and lines[2].startswith("embed: 100%")


def test_quiet_prints_nothing_on_a_terminal_or_in_a_log():
    for terminal in (True, False):
        console, buffer = _console(terminal)
        bars = Bars(quiet=True, console=console)
        _run(bars, 200)
        assert bars.mode == "off" and buffer.getvalue() == ""


def test_a_terminal_shows_a_bar_with_count_and_eta():
    console, buffer = _console(terminal=True)
    bars = Bars(console=console)
    assert bars.mode == "bar"
    with bars:
        for step in range(1, 6):
            bars("embed images", step, 10)
            time.sleep(0.02)
        bars._progress.refresh()  # type: ignore[union-attr]
        mid_run = buffer.getvalue()
    assert "embed images" in mid_run and "5/10" in mid_run and "━" in mid_run
    assert "ETA 0:00:0" in mid_run  # a real estimate (about 0.1 s left), not -:--:--


# --- through the commands ------------------------------------------------------------------


def _progress_lines(stderr: str, stage: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{stage}: ")]


def test_training_in_a_log_reports_each_tenth_and_quiet_nothing(cli, planted_store, tmp_path):
    args = ["train", "--embeddings", planted_store.path, "--n-latents", "32", "--k-min", "8",
            "--epochs", "1", "--batch-size", "100"]  # fmt: skip
    r = cli(*args, "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    lines = _progress_lines(r.stderr, "train")
    assert len(lines) == 10 and lines[-1].startswith("train: 100% (40/40)"), r.stderr
    assert "loss" in lines[-1] and "fvu" in lines[-1]
    quiet = cli(*args, "--out", tmp_path / "b", "--quiet")
    assert quiet.exit_code == 0 and not _progress_lines(quiet.stderr, "train"), quiet.stderr


def test_training_on_a_terminal_shows_a_bar_however_few_steps(
    cli, planted_store, tmp_path, monkeypatch
):
    import audit.cli.progress

    terminal, buffer = _console(terminal=True)
    monkeypatch.setattr(audit.cli.progress, "err_console", terminal)
    r = cli("train", "--embeddings", planted_store.path, "--n-latents", "32", "--k-min", "8",
            "--max-steps", "2", "--out", tmp_path / "s")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    shown = buffer.getvalue()
    assert "train" in shown and "2/2" in shown and "━" in shown and "done" in shown, shown


def test_naming_reports_the_vocabulary_embedding_and_the_matching(cli, tmp_path):
    import numpy as np

    from audit.sae import save_sae
    from tests.concepts.worlds import planted_sae
    from tests.world_helpers import make_random_clip

    config, weights, _ = make_random_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    save_sae(planted_sae(rng.standard_normal((8, 32)), n_planted=8, n_latents=64), tmp_path / "sae")
    words = tmp_path / "words.txt"
    words.write_text("\n".join(f"word{i}" for i in range(600)) + "\n")
    args = ["concepts", "--sae", tmp_path / "sae", "--vocab", words, "--model", config,
            "--pretrained", weights, "--device", "cpu", "--out", tmp_path / "bank.yaml"]  # fmt: skip
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    # 2 templates × 600 words in batches of 256: 256, 512, 600, 856, 1112, 1200 done
    embedded = _progress_lines(r.stderr, "embed vocabulary")
    assert [line.split("(")[1].split("/")[0] for line in embedded] == [
        "256", "512", "600", "856", "1,112", "1,200"
    ]  # fmt: skip
    assert embedded[-1].startswith("embed vocabulary: 100% (1,200/1,200)")
    assert _progress_lines(r.stderr, "name latents")[-1].startswith("name latents: 100%")
    quiet = cli(*args, "-q")
    assert quiet.exit_code == 0 and not _progress_lines(quiet.stderr, "embed vocabulary")


def test_the_audit_reports_every_stage_in_a_log_and_nothing_when_quiet(cli, tmp_path):
    from tests.audit_worlds import write_world

    world = write_world(tmp_path / "w", n_samples=1500, seed=0)
    args = ["audit", "--embeddings", world["store"], "--target", "Male", "--spurious",
            "Blond_Hair", "--sae", world["sae"], "--bank", world["bank"], "--classifier",
            world["head"], "--json", tmp_path / "a.json", "--html", tmp_path / "a.html",
            "--junit", tmp_path / "a.xml"]  # fmt: skip
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    for stage in ("ablate every latent", "activations", "null", "bootstrap"):
        lines = _progress_lines(r.stderr, stage)
        assert lines and lines[-1].startswith(f"{stage}: 100%"), (stage, r.stderr)
        assert len(lines) <= 10  # about one line per tenth, never a line per step
    quiet = cli(*args, "--quiet")
    assert quiet.exit_code == 0
    assert not any(_progress_lines(quiet.stderr, s) for s in ("null", "bootstrap")), quiet.stderr
