"""`msae-audit train` end to end, its YAML config and its error handling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import assert_one_line_error


def test_train_writes_spec_checkpoint(cli, planted_store, tmp_path):
    out = tmp_path / "sae"
    r = cli(
        "train",
        "--embeddings",
        planted_store.path,
        "--arch",
        "matryoshka",
        "--expansion",
        "2",
        "--k-min",
        "4",
        "--weighting",
        "rw",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--lr",
        "1e-3",
        "--seed",
        "1",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.stderr
    assert "Training summary" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["arch"] == "matryoshka"
        and cfg["n_latents"] == 64
        and cfg["k_list"] == [4, 8, 16, 32, 64]
    )
    assert (
        cfg["weighting"] == "rw"
        and cfg["embedding_model"] == "planted"
        and cfg["modality"] == "image"
    )
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 2 * 16 and training["history"]
    # A second run into the same folder is refused unless asked.
    r = cli("train", "--embeddings", planted_store.path, "--out", out, "--epochs", "1")
    assert_one_line_error(r, 2, "already holds a model")


def test_yaml_config_and_cli_override(cli, planted_store, tmp_path):
    conf = tmp_path / "train.yaml"
    conf.write_text(
        f"embeddings: {planted_store.path}\narch: topk\nk: 3\nn-latents: 48\nepochs: 1\nbatch_size: 500\n"
    )
    r = cli("train", "--config", conf, "--k", "5", "--out", tmp_path / "t")
    assert r.exit_code == 0, r.stderr
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert (cfg["arch"], cfg["k"], cfg["n_latents"]) == ("topk", 5, 48)


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("arch: [unclosed\n", "malformed YAML"),
        ("bogus_option: 1\n", "unknown option"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_yaml(cli, tmp_path, yaml_text, message):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml_text)
    assert_one_line_error(cli("train", "--config", conf, "--out", tmp_path / "o"), 2, message)


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("epochs: many\n", "config option 'epochs' must be an integer, got 'many'"),
        ("epochs: 1.5\n", "config option 'epochs' must be an integer"),
        ("lr: .nan\n", "config option 'lr' must be a number"),
        ("mean_center: 'no'\n", "config option 'mean-center' must be true or false"),
        ("k_min: 0\n", "--k-min must be positive"),
        ("n_latents: 0\n", "n_latents must be a positive integer"),
        ("checkpoint_every: -1\n", "--checkpoint-every must be 0 or more"),
        ("out: [1, 2]\n", "config option 'out' must be text"),
    ],
)
def test_config_values_of_the_wrong_type_exit_2(cli, planted_store, tmp_path, yaml_text, message):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml_text)
    args = ["train", "--config", conf, "--embeddings", planted_store.path, "-q"]
    if not yaml_text.startswith("out:"):
        args += ["--out", tmp_path / "o"]
    assert_one_line_error(cli(*args), 2, message)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_bad_inputs_exit_2(cli, tmp_path, rng):
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x[7, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    assert_one_line_error(
        cli("train", "--embeddings", tmp_path / "nan.npy", "--out", tmp_path / "o"), 2, "row 7"
    )
    assert not (tmp_path / "o").exists()  # a failed run leaves no empty folder behind
    (tmp_path / "kept").mkdir()
    assert_one_line_error(
        cli("train", "--embeddings", tmp_path / "nan.npy", "--out", tmp_path / "kept"), 2, "row 7"
    )
    assert (tmp_path / "kept").is_dir()  # but never removes a folder it did not create
    np.save(tmp_path / "3d.npy", np.zeros((2, 3, 4), dtype=np.float32))
    assert_one_line_error(
        cli("train", "--embeddings", tmp_path / "3d.npy", "--out", tmp_path / "o"), 2, "2-D"
    )
    assert_one_line_error(
        cli("train", "--embeddings", tmp_path / "missing", "--out", tmp_path / "o"), 2, "not found"
    )
    np.save(tmp_path / "ok.npy", np.nan_to_num(x))
    assert_one_line_error(
        cli(
            "train",
            "--embeddings",
            tmp_path / "ok.npy",
            "--arch",
            "sparse",
            "--out",
            tmp_path / "o",
        ),
        2,
        "unknown architecture",
    )
    assert_one_line_error(
        cli(
            "train",
            "--embeddings",
            tmp_path / "ok.npy",
            "--arch",
            "topk",
            "--k",
            "99",
            "--n-latents",
            "12",
            "--out",
            tmp_path / "o",
        ),
        2,
        "k",
    )
    r = cli("train", "--no-such-flag")
    assert r.exit_code == 2 and "Traceback" not in r.stderr


def test_resume_flag_continues(cli, planted_store, tmp_path):
    from audit.sae import SAEConfig, matryoshka_k_list
    from audit.sae.train import TrainConfig, train_sae

    cfg = SAEConfig(
        arch="matryoshka",
        d_in=planted_store.dim,
        n_latents=64,
        k_list=matryoshka_k_list(64, 64),
        embedding_model="planted",
        modality="image",
    )
    train_sae(
        planted_store,
        cfg,
        TrainConfig(epochs=2, batch_size=256, seed=0),
        tmp_path / "r",
        stop_after=5,
    )
    r = cli(
        "train",
        "--embeddings",
        planted_store.path,
        "--n-latents",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--out",
        tmp_path / "r",
        "--resume",
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "r" / "training.json").read_text())["steps"] == 32


def _small_train(cli, embeddings, out, *extra):
    return cli(
        "train", "--embeddings", embeddings, "--n-latents", "24", "--k-min", "4",
        "--epochs", "1", "--batch-size", "64", "--out", out, *extra,
    )  # fmt: skip


def test_overwrite_keeps_the_old_model_when_the_new_input_is_bad(cli, planted_store, tmp_path):
    out = tmp_path / "sae"
    assert _small_train(cli, planted_store.path, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = np.asarray(planted_store.read()).copy()
    bad[5, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    r = _small_train(cli, tmp_path / "nan.npy", out, "--overwrite")
    assert_one_line_error(r, 2, "row 5")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # And a good --overwrite does replace it.
    assert _small_train(cli, planted_store.path, out, "--overwrite", "--seed", "3").exit_code == 0
    assert (out / "sae.safetensors").read_bytes() != before["sae.safetensors"]


def _interrupted_run(store, out):  # type: ignore[no-untyped-def]
    """A small Matryoshka run on ``store`` stopped after 3 steps in ``out``; returns a function
    that starts the same run elsewhere (its SAE and training settings)."""
    from audit.sae import SAEConfig, matryoshka_k_list
    from audit.sae.train import TrainConfig, train_sae

    cfg = SAEConfig(
        arch="matryoshka", d_in=store.dim, n_latents=24,
        k_list=matryoshka_k_list(24, 4), embedding_model="planted", modality="image",
    )  # fmt: skip

    def run(data, folder, **kw):  # type: ignore[no-untyped-def]
        return train_sae(data, cfg, TrainConfig(epochs=1, batch_size=64), folder, **kw)

    run(store, out, stop_after=3)
    return run


def test_an_interrupted_run_is_not_silently_restarted(cli, planted_store, tmp_path):
    out = tmp_path / "r"
    run = _interrupted_run(planted_store, out)
    assert_one_line_error(_small_train(cli, planted_store.path, out), 2, "--resume")
    # The same store reached by another path resumes (the data's content names it) ...
    other = tmp_path / "same-store"
    other.symlink_to(planted_store.path, target_is_directory=True)
    assert _small_train(cli, other, out, "--resume").exit_code == 0
    # ... and other data at the checkpoint's path is refused.
    run(planted_store, tmp_path / "r2", stop_after=3)
    changed = np.asarray(planted_store.read()) * -3
    np.save(tmp_path / "changed.npy", changed)
    from audit.store import open_store

    with pytest.raises(Exception, match="different embeddings"):
        run(open_store(tmp_path / "changed.npy"), tmp_path / "r2", resume=True)


def test_a_diverging_run_stops_with_one_line_and_publishes_nothing(cli, planted_store, tmp_path):
    out = tmp_path / "sae"
    r = _small_train(cli, planted_store.path, out, "--lr", "1e30")
    assert_one_line_error(r, 2, "diverged")
    assert not (out / "sae.safetensors").exists() and not (out / "config.json").exists()


@pytest.mark.parametrize(
    "extra,message",
    [(["--aux-coef", "nan"], "aux_coef"), (["--seed", "-1"], "--seed"),
     (["--seed", str(2**40)], "--seed")],
)  # fmt: skip
def test_bad_numbers_are_refused_before_training(cli, planted_store, tmp_path, extra, message):
    assert_one_line_error(_small_train(cli, planted_store.path, tmp_path / "o", *extra), 2, message)


def test_a_useless_finite_run_ends_with_a_warning(cli, planted_store, tmp_path):
    """--lr 1e6 stays finite but reconstructs worse than the data mean: the model is written
    (exit 0, nothing lost) and the user is told, in one line and in training.json."""
    r = _small_train(cli, planted_store.path, tmp_path / "bad", "--lr", "1e6", "-q")
    assert r.exit_code == 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "FVU" in warnings[0] and "--lr" in warnings[0]
    summary = json.loads((tmp_path / "bad" / "training.json").read_text())
    assert summary["final"]["fvu"] >= 1 and len(summary["warnings"]) == 1
    good = _small_train(cli, planted_store.path, tmp_path / "good", "-q")
    assert good.exit_code == 0 and "warning:" not in good.stderr
    assert json.loads((tmp_path / "good" / "training.json").read_text())["warnings"] == []


def test_the_training_fvu_of_a_one_row_last_batch_is_not_divided_by_its_own_spread(
    cli, planted_store, tmp_path
):
    """4000 rows in batches of 3999: the last (logged) batch has one row, whose own variance
    is 0; the FVU is measured against the data's variance, so it stays a fraction."""
    out = tmp_path / "sae"
    r = _small_train(cli, planted_store.path, out, "--batch-size", "3999", "--epochs", "3", "-q")
    assert r.exit_code == 0
    history = json.loads((out / "training.json").read_text())["history"]
    assert history[-1]["step"] == 6
    assert 0 < history[-1]["fvu"] < 1.5, history[-1]
    assert "warning:" not in r.stderr


def test_resuming_on_other_embeddings_says_so(cli, planted_store, tmp_path):
    """Interrupted on a store, resumed (from the command line) on a .npy of other rows: the
    one line names the embeddings, not the SAE settings the .npy's missing model changes."""
    out = tmp_path / "r"
    _interrupted_run(planted_store, out)
    other = tmp_path / "other.npy"
    np.save(other, np.asarray(planted_store.read()) * -3)
    assert_one_line_error(_small_train(cli, other, out, "--resume"), 2, "different embeddings")
