"""The re-check command of a flagged concept: it must re-run the audit on the same classifier,
read the same way, or it re-checks something else (or fails for a model that needs its size)."""

from __future__ import annotations

import shlex

from audit.cli.app import app
from audit.discover.recheck import recheck_command
from audit.fairness.config import AuditSettings

INPUTS = {
    "embeddings": {"path": "store"},
    "sae": {"path": "sae"},
    "bank": {"path": "bank.yaml"},
}


def _args(classifier: dict, **settings: object) -> list[str]:
    base = AuditSettings(target="is_circle", spurious="", **settings)  # type: ignore[arg-type]
    command = recheck_command({**INPUTS, "classifier": classifier}, base, "red", 1.5, "g.yaml")
    return shlex.split(command)


def _option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def test_an_image_model_keeps_its_input_size_batch_and_workers():
    args = _args({"kind": "image", "path": "cnn.pt"}, classifier_input="image", image_size=16,
                 workers=0, image_batch_size=8)  # fmt: skip
    assert _option(args, "--image-batch-size") == "8"
    assert _option(args, "--classifier") == "cnn.pt"
    assert _option(args, "--classifier-input") == "image"
    assert _option(args, "--image-size") == "16"
    assert _option(args, "--workers") == "0"


def test_defaults_stay_out_of_the_command():
    args = _args({"kind": "image", "path": "cnn.pt"}, classifier_input="image")
    assert "--image-size" not in args and "--workers" not in args
    assert "--image-batch-size" not in args
    head = _args({"kind": "linear", "path": "head.npz"}, image_size=16, workers=0,
                 image_batch_size=8)  # fmt: skip
    assert "--classifier-input" not in head and "--image-size" not in head
    assert (
        "--workers" not in head and "--image-batch-size" not in head
    )  # they apply to image models only


def test_a_predictions_file_is_passed_as_predictions():
    args = _args({"kind": "predictions", "path": "pred.csv"})
    assert _option(args, "--predictions") == "pred.csv" and "--classifier" not in args


def test_every_option_the_command_uses_is_an_audit_option():
    """The command parses: each flag it writes is one `msae-audit audit` takes."""
    import typer.main

    from audit.cli import _register_commands

    _register_commands()
    command = typer.main.get_command(app).commands["audit"]  # type: ignore[attr-defined]
    known = {o for p in command.params for o in p.opts}
    args = _args({"kind": "image", "path": "cnn.pt"}, classifier_input="image", image_size=16,
                 workers=0)  # fmt: skip
    assert {a for a in args if a.startswith("--")} <= known


def test_a_concepts_gate_allowlists_every_other_concept_and_keeps_the_users():
    from audit.discover.recheck import concept_gate, concept_gate_path
    from audit.fairness.config import GateConfig

    gate = GateConfig(allowlist=("Beard",), min_dwga=0.05)
    written = concept_gate(gate, "red", ["red", "purple", "beard", "blue"])
    allow = written["concepts"]["allowlist"]
    assert "red" not in allow and {"purple", "blue"} <= set(allow)
    assert [a.lower() for a in allow].count("beard") == 1
    assert written["concepts"]["min_dwga"] == 0.05
    assert written["gates"] == {"flagged_concepts": {"max": 0}}
    assert concept_gate_path("out/discover-gate.yaml", 2) == "out/discover-gate-2.yaml"
