"""Groups are shown by their class names (--class-names) in every report; the JSON keeps the
COLUMN=VALUE keys; a malformed entry is one line and exit code 2."""

from __future__ import annotations

import pytest

from audit.errors import InputError
from audit.fairness import AuditSettings, parse_result, run_audit, to_json
from audit.fairness.config import parse_class_names
from audit.report.html import render_html
from audit.report.markdown import render_markdown
from tests.fairness.planted import planted_bias_world
from tests.fairness.test_planted import memory_store

NAMES = ("Male=1:man,Male=0:woman", "Blond_Hair=1:blond", "Blond_Hair=0:not blond")


@pytest.fixture(scope="module")
def result():
    world = planted_bias_world(n_samples=1500, seed=2)
    settings = AuditSettings("Male", "Blond_Hair", class_names=NAMES)
    found, _ = run_audit(memory_store(world.embeddings), world.labels, world.sae, world.bank,
                         world.head, settings)  # fmt: skip
    return parse_result(to_json(found))  # as a saved JSON renders


def test_reports_name_groups_by_class(result):
    assert result.worst_group == "Male=1, Blond_Hair=1"  # the JSON's keys are unchanged
    assert result.data.class_names["Blond_Hair=0"] == "not blond"
    page = render_html(result)
    assert "man, blond" in page and "woman, not blond" in page
    assert "Male=1, Blond_Hair=1" not in page.split("<h2>Inputs")[0]
    md = render_markdown(result)
    assert "**man, blond**" in md and "| woman, not blond |" in md


def test_without_class_names_the_label_values_are_shown():
    world = planted_bias_world(n_samples=1500, seed=2)
    found, _ = run_audit(memory_store(world.embeddings), world.labels, world.sae, world.bank,
                         world.head, AuditSettings("Male", "Blond_Hair"))  # fmt: skip
    assert "class_names" not in to_json(found)["data"]
    assert "Male=1, Blond_Hair=1" in render_html(found)


@pytest.mark.parametrize("bad", ["Male:man", "Male=1", "=1:man", "Male=1:", "Male=1:man,"])
def test_malformed_class_names_are_an_input_error(bad):
    with pytest.raises(InputError, match="COLUMN=VALUE:NAME"):
        parse_class_names([bad])
