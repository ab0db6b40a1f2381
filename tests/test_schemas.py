"""The JSON Schemas in docs/schemas/: current, and met by every JSON the tool writes (the CLI
tests validate what `audit`, `celeba` and `check` write; here the golden results and `eval`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.golden.cases import EXPECTED
from tests.schemas import SCHEMAS, assert_valid, assert_valid_file


def test_audit_schema_file_is_generated_from_the_typed_result():
    from audit.fairness.schema import audit_schema

    written = json.loads((SCHEMAS / "audit.schema.json").read_text(encoding="utf-8"))
    assert written == audit_schema(), (
        "regenerate: python -m audit.fairness.schema > docs/schemas/audit.schema.json"
    )


@pytest.mark.parametrize("path", sorted(EXPECTED.glob("*.json")), ids=lambda p: p.stem)
def test_golden_audit_results_validate(path):
    assert_valid_file(path, "audit")


def test_the_schema_refuses_what_the_reader_refuses():
    """The schema is strict where the reader is: a damaged result fails both."""
    from audit.errors import InputError
    from audit.fairness import parse_result

    document = json.loads((EXPECTED / "planted_bias_raw.json").read_text(encoding="utf-8"))
    document["concepts"][0]["ci"] = [0.1]
    with pytest.raises(AssertionError, match="ci"):
        assert_valid(document, "audit")
    with pytest.raises(InputError, match=r"concepts\[0\].ci"):
        parse_result(document)


def test_eval_json_validates(planted_store):
    from audit.evaluate import EvalConfig, evaluate_sae
    from audit.sae import SAEConfig, build_sae

    sae = build_sae(SAEConfig(arch="topk", d_in=planted_store.dim, n_latents=64, k=8)).eval()
    labels = pd.Series(np.arange(planted_store.count) % 2)
    cfg = EvalConfig(cknna_samples=256, device="cpu")
    result = evaluate_sae(sae, planted_store, cfg, labels=labels, label_column="parity")
    assert_valid(json.loads(json.dumps(result)), "eval")
    no_labels = evaluate_sae(sae, planted_store, EvalConfig(cknna_samples=64, progressive=False))
    assert_valid(json.loads(json.dumps(no_labels)), "eval")
