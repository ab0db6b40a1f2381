"""Rewrite the golden files (``tests/golden/expected/``) from the cases in ``cases.py``.

    PYTHONPATH=. python -m tests.golden.regenerate              # every case
    PYTHONPATH=. python -m tests.golden.regenerate demo         # some cases
    PYTHONPATH=. python -m tests.golden.regenerate --from-demo /tmp/demo   # new demo inputs

``--from-demo DIR`` first copies the inputs of the demo's audit from a ``msae-audit demo --out
DIR`` run into ``inputs/demo``: the test split of the store (ids, split, target and attribute
columns only), the SAE, the concept bank and the head. Machine-specific strings (the tiny
CLIP's cache path) are replaced, so the SAE is re-saved and the bank re-pointed at it; the
numbers are untouched. Review ``git diff`` afterwards: golden files change only for a reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from tests.golden.cases import CASES, DEMO_INPUTS, EXPECTED
from tests.golden.compare import difference

DEMO_MODEL = "tinyclip (msae-audit demo world)"
DEMO_COLUMNS = ["id", "split", "is_circle", "is_red"]


def copy_demo_inputs(demo: Path, out: Path = DEMO_INPUTS) -> None:
    from audit.concepts import load_bank, save_bank
    from audit.fileio import write_bytes
    from audit.sae import load_sae, sae_fingerprint, save_sae
    from audit.store import open_store, write_store

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    store = open_store(demo / "store")
    assert store.metadata is not None
    test = (store.metadata["split"] == "test").to_numpy().nonzero()[0]
    write_store(
        out / "store", store.take(test), store.metadata.iloc[test][DEMO_COLUMNS],
        model=DEMO_MODEL, modality="image",
    )  # fmt: skip
    sae = load_sae(demo / "sae")
    sae.cfg = dataclasses.replace(sae.cfg, embedding_model=DEMO_MODEL, pretrained=None)
    save_sae(sae, out / "sae")
    bank = load_bank(demo / "concept_banks" / "demo.yaml")
    bank.sae = {**bank.sae, "fingerprint": sae_fingerprint(sae), "path": "sae",
                "embedding_model": DEMO_MODEL, "pretrained": None}  # fmt: skip
    bank.embedding_model, bank.pretrained = DEMO_MODEL, None
    for concept in bank.concepts:
        concept.alternatives = []  # runner-up words: the audit never reads them
    save_bank(bank, out / "bank.yaml")
    write_bytes(out / "head.npz", (demo / "head.npz").read_bytes())


def regenerate(names: list[str]) -> list[Path]:
    EXPECTED.mkdir(exist_ok=True)
    written = []
    for case in CASES:
        if names and case.name not in names:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            for file, text in case.run(Path(tmp)).items():
                path = EXPECTED / file
                # A file that differs only by float noise (another CPU) is kept: rewriting it
                # would bury a real change in hundreds of last-digit ones.
                if (
                    path.exists()
                    and difference(file, path.read_text(encoding="utf-8"), text) is None
                ):
                    continue
                path.write_text(text, encoding="utf-8")
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--from-demo", type=Path, help="copy the demo's inputs from DIR first")
    args = parser.parse_args(argv)
    unknown = set(args.cases) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.from_demo:
        copy_demo_inputs(args.from_demo)
    for path in regenerate(args.cases):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
