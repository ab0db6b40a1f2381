"""A process for ``kill -9`` tests: it writes stores, banks or reports until it is killed.

``python -m tests.crash_writer KIND OUT [SEED]`` prints ``ready`` once its imports are done, then

* ``store``: writes ``OUT`` with :class:`audit.store.StoreWriter` (small shards, a slow
  producer), resuming whatever an earlier, killed run left, and prints ``done`` at the end;
* ``bank``: saves a large concept bank to ``OUT`` over and over, each version numbered;
* ``report``: writes an audit's JSON, HTML, JUnit and Markdown reports into the folder ``OUT``
  over and over, each version numbered.

Everything is a function of the seed, so a test can compare what survives a kill with what the
writer meant to write.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from audit.fairness import AuditResult

STORE_ROWS, STORE_DIM, SHARD_ROWS, BLOCK_ROWS = 3000, 24, 128, 50


def store_rows(seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STORE_ROWS, STORE_DIM)).astype(np.float32)
    return x, pd.DataFrame(
        {"id": [f"r{i:05d}" for i in range(STORE_ROWS)], "k": np.arange(STORE_ROWS) % 7}
    )


def write_store_slowly(out: Path, seed: int) -> None:
    from audit.store import StoreWriter

    x, meta = store_rows(seed)
    writer = StoreWriter(out, STORE_DIM, shard_rows=SHARD_ROWS, model="crash-test")
    for start in range(writer.rows_done, STORE_ROWS, BLOCK_ROWS):
        time.sleep(0.02)  # an encoder's work
        writer.append(x[start : start + BLOCK_ROWS], meta.iloc[start : start + BLOCK_ROWS])
    writer.finalize()
    print("done", flush=True)


def big_bank(version: int, n_latents: int = 1000):
    from audit.concepts import Concept, ConceptBank

    concepts = [
        Concept(i, f"concept {i} v{version}", 0.5, f"concept {i}", True,
                [(f"alt {i}.{j}", 0.25) for j in range(4)], 1)
        for i in range(n_latents)
    ]  # fmt: skip
    return ConceptBank(
        name="crash", sae={"fingerprint": "sha256:crash", "n_latents": n_latents},
        concepts=concepts, extra={"run": version},
    )  # fmt: skip


def report_result(version: int) -> AuditResult:
    """A (made-up) audit result with a large concept table, built on a golden result."""
    import json
    from dataclasses import replace

    from audit.fairness import parse_result

    golden = Path(__file__).parent / "golden" / "expected" / "planted_bias_raw.json"
    base = parse_result(json.loads(golden.read_text(encoding="utf-8")))
    template = base.concepts[0]
    concepts = tuple(
        replace(template, rank=i + 1, latent=i, latents=(i,), name=f"c{i}", label=f"c{i}",
                delta_wga=0.001, ci=(0.0, 0.002), p=1.0, q=1.0, flagged=False)
        for i in range(20000)
    )  # fmt: skip
    return replace(base, concepts=concepts, extra={"run_version": version})


def _versions(text: str, marker: str):
    """``text`` with ``marker`` replaced by 1, 2, 3, ...: cheap new versions, so nearly all of
    the loop's time is spent inside the atomic write (where a kill is most interesting)."""
    version = 0
    while True:
        version += 1
        yield text.replace(marker, str(version))


def main(argv: list[str]) -> None:
    kind, out = argv[0], Path(argv[1])
    seed = int(argv[2]) if len(argv) > 2 else 0
    from audit.fileio import write_text

    if kind == "store":
        print("ready", flush=True)
        write_store_slowly(out, seed)
        return
    if kind == "bank":
        from audit.concepts import save_bank

        scratch = save_bank(big_bank(987654321), out.with_name(".scratch.yaml"))
        template = scratch.read_text(encoding="utf-8")
        scratch.unlink()
        print("ready", flush=True)
        for text in _versions(template, "987654321"):
            write_text(out, text)
    if kind == "report":
        from audit.fairness import dumps
        from audit.report import junit, markdown

        result = report_result(987654321)
        templates = {
            "audit.json": dumps(result),
            "audit.xml": junit.render_junit(result),
            "audit.md": markdown.render_markdown(result),
        }
        print("ready", flush=True)
        streams = {name: _versions(text, "987654321") for name, text in templates.items()}
        while True:
            for name, stream in streams.items():
                write_text(out / name, next(stream))
    raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
