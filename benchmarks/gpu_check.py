"""One run that measures msae-audit on a GPU and writes one JSON + Markdown summary.

    bash benchmarks/gpu_check.sh [--out DIR]      # on a CUDA machine: the full check, < 8 min
    bash benchmarks/gpu_check.sh --smoke          # anywhere: the same steps at toy sizes

Parts, in order (each a subprocess with its own time limit, within ``--budget`` seconds; a
part that fails or runs out of time is recorded as such and the next one runs):

1. ``environment``: GPU, driver, torch/CUDA versions, CPU count, date.
2. ``calibrate``: the sparse-vs-dense decode cost ratio on this device at the paper's shapes
   (the nested loss's planner uses an estimate of it, ``CUDA_SPARSE_COST_FACTOR``).
3. ``train``: ``benchmarks/train_throughput.py`` at the paper's configuration (d = 768,
   expansion 32 → n = 24 576, Matryoshka RW, k levels 64 … 24 576 doubling, batch 4096):
   ``train_sae`` end to end, then ours against the plain per-level implementation at
   initialisation and at trained-like sparsity (20 % and 4 % of the latents active), fp32 (TF32)
   and bf16 autocast, with peak memory and the analytic estimate; and the projected time of
   the paper's CC3M run (2 905 936 embeddings × 30 epochs).
4. ``embed``: ``benchmarks/embed_speed.py`` with a ViT-L-14-sized open_clip model (random
   weights, fp16) on synthetic JPEGs: images/s end to end, and of the model alone.
5. ``audit``: ``benchmarks/audit_speed.py``, 200 000 × 768 embeddings, 6 144 latents.
6. ``pytest``: ``pytest -m cuda tests/cuda`` (CUDA equivalence, transfers, memory).
7. ``eval``: ``benchmarks/eval_speed.py``, 200 000 × 768 embeddings, 6 144 latents.

Nothing is downloaded: data, images and model weights are synthetic. Writes
``gpu_check.json``, ``gpu_check.md``, ``gpu_check.log`` (every part's output) and
``pytest_cuda.xml`` into ``--out`` (default ``$OUT``, else ``reports/gpu_check``).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_report import goals, render_markdown

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CC3M_ROWS = 2_905_936  # the paper's CC3M training embeddings (ViT-L/14, 768-d)
CC3M_EPOCHS = 30

FULL: dict[str, Any] = {
    "device": "cuda",
    "train": ["--d", "768", "--n", "24576", "--batch", "4096", "--k-min", "64",
              "--weighting", "rw", "--rows", "262144", "--epochs", "1",
              "--regimes", "init,active=0.2,active=0.04", "--precisions", "fp32,bf16",
              "--naive-steps", "5"],
    "embed": ["--model", "ViT-L-14", "--precision", "fp16", "--images", "8192",
              "--naive-images", "64", "--batch-size", "256", "--model-batches", "10"],
    "audit": ["--rows", "200000", "--dim", "768", "--latents", "6144", "--naive-latents", "4"],
    "eval": ["--rows", "200000", "--dim", "768", "--latents", "6144"],
    "calibrate": {"batch": 4096, "n": 24576, "d": 768, "widths": [64, 256]},
    "limits": {"calibrate": 60, "train": 180, "embed": 150, "audit": 120, "pytest": 300,
               "eval": 90},
}  # fmt: skip
SMOKE: dict[str, Any] = {
    "device": "auto",
    "train": ["--d", "16", "--n", "64", "--batch", "64", "--k-min", "4", "--weighting", "rw",
              "--rows", "256", "--regimes", "init,active=0.2", "--precisions", "fp32,bf16",
              "--naive-steps", "1", "--threads", "1"],
    "embed": ["--images", "8", "--size", "40", "--batch-size", "4", "--workers", "0",
              "--model-batches", "2"],
    "audit": ["--rows", "2000", "--dim", "32", "--latents", "256", "--named", "40",
              "--active", "4", "--naive-latents", "1", "--threads", "1"],
    "eval": ["--rows", "2000", "--dim", "32", "--latents", "256", "--threads", "1"],
    "calibrate": {"batch": 64, "n": 512, "d": 32, "widths": [8]},
    "limits": {"calibrate": 60, "train": 120, "embed": 120, "audit": 120, "pytest": 240,
               "eval": 60},
}  # fmt: skip


class Run:
    """The output folder, the log every part appends to, and the time left."""

    def __init__(self, out: Path, budget: float, smoke: bool) -> None:
        self.out, self.smoke = out, smoke
        self.config = SMOKE if smoke else FULL
        self.deadline = time.monotonic() + budget
        self.log = (out / "gpu_check.log").open("w", encoding="utf-8")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def command(self, name: str, argv: list[str], limit: float) -> subprocess.CompletedProcess:
        self.log.write(f"\n===== {name}: {' '.join(argv)}\n")
        self.log.flush()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit, check=False
        )
        self.log.write(done.stdout + done.stderr)
        self.log.flush()
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"exit code {done.returncode}: {' | '.join(tail)}")
        return done

    def script(self, name: str, script: str, args: list[str], limit: float) -> dict:
        """Run ``benchmarks/<script>`` with ``--json`` and return what it wrote."""
        path = self.out / f".{name}.json"
        self.command(name, [sys.executable, str(BENCH / script), *args, "--json", str(path)], limit)
        figures = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
        return figures


# -- parts ----------------------------------------------------------------------------------


def environment(run: Run, limit: float) -> dict:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)  # fmt: skip
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        info["nvidia_smi"] = done.stdout.strip()
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except ImportError as exc:
        info["open_clip"] = f"missing ({exc})"
    return info


def calibrate(run: Run, limit: float) -> dict:
    """Seconds of one dense ``[B, n] @ [n, d]`` decode against a CSR decode of ``w`` entries
    per row; ``factor`` is the sparse cost per entry over the dense cost per element."""
    import torch

    from audit.device import resolve_device

    cfg = run.config["calibrate"]
    device = resolve_device(run.config["device"])
    b, n, d = cfg["batch"], cfg["n"], cfg["d"]
    gen = torch.Generator(device=device).manual_seed(0)
    W = torch.randn(n, d, device=device, generator=gen)
    dense = torch.randn(b, n, device=device, generator=gen)
    figures: dict[str, Any] = {"device": str(device), "batch": b, "n": n, "d": d}
    with _tf32(device):
        figures["dense_seconds"] = _median_seconds(lambda: dense @ W, device)
    if device.type == "cuda":
        half, Wh = dense.bfloat16(), W.bfloat16()
        figures["dense_bf16_seconds"] = _median_seconds(lambda: half @ Wh, device)
    figures["sparse"] = []
    for width in cfg["widths"]:
        cols = torch.rand(b, n, device=device, generator=gen).topk(width, dim=1).indices
        crow = torch.arange(0, b * width + 1, width, device=device)
        values = torch.rand(b * width, device=device, generator=gen)
        csr = torch.sparse_csr_tensor(crow, cols.flatten(), values, size=(b, n))
        seconds = _median_seconds(lambda csr=csr: csr @ W, device)
        factor = (seconds / (b * width)) / (figures["dense_seconds"] / (b * n))
        figures["sparse"].append({"per_row": width, "seconds": seconds, "factor": round(factor, 1)})
    from audit.sae.nested_plan import plan_costs

    figures["planner_factor"] = plan_costs(device)[0]
    return figures


def train(run: Run, limit: float) -> dict:
    args = [*run.config["train"], "--device", run.config["device"]]
    figures = run.script("train", "train_throughput.py", args, limit)
    steady = figures["train_sae"]["steady_samples_per_second"]
    projection = {"rows": CC3M_ROWS, "epochs": CC3M_EPOCHS, "batch": figures["config"]["batch"]}
    projection["train_sae_initial_density_seconds"] = round(CC3M_ROWS * CC3M_EPOCHS / steady, 1)
    for regime, loops in figures["bare_loops"].items():
        if regime.startswith("active="):
            sps = loops["fp32"]["ours_samples_per_second"]
            projection[f"bare_step_{regime}_seconds"] = round(CC3M_ROWS * CC3M_EPOCHS / sps, 1)
    figures["cc3m_projection"] = projection
    return figures


def embed(run: Run, limit: float) -> dict:
    args = [*run.config["embed"], "--device", run.config["device"]]
    if run.smoke:
        args += ["--model", str(_tiny_model_config(run.out))]
    else:
        args += ["--workers", str(max(1, min(12, (os.cpu_count() or 2) - 2)))]
    return run.script("embed", "embed_speed.py", args, limit)


def audit(run: Run, limit: float) -> dict:
    args = [*run.config["audit"], "--device", run.config["device"]]
    if not run.smoke:
        args += ["--threads", str(max(1, min(8, os.cpu_count() or 1)))]
    return run.script("audit", "audit_speed.py", args, limit)


def evaluate(run: Run, limit: float) -> dict:
    args = [*run.config["eval"], "--device", run.config["device"]]
    return run.script("eval", "eval_speed.py", args, limit)


def pytest_cuda(run: Run, limit: float) -> dict:
    xml = run.out / "pytest_cuda.xml"
    argv = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs",
            f"--timeout={int(max(60, limit - 30))}", f"--junitxml={xml}", "tests/cuda"]  # fmt: skip
    try:
        run.command("pytest", argv, limit)
        status_error = None
    except RuntimeError as exc:  # failing tests: the XML says which
        status_error = str(exc)
    figures = _junit_summary(xml)
    figures["error"] = status_error if not figures.get("failed_tests") else None
    return figures


PARTS: list[tuple[str, Callable[[Run, float], dict]]] = [
    ("environment", environment),
    ("calibrate", calibrate),
    ("train", train),
    ("embed", embed),
    ("audit", audit),
    ("pytest", pytest_cuda),
    ("eval", evaluate),
]


# -- helpers --------------------------------------------------------------------------------


def _median_seconds(fn: Callable[[], Any], device: Any, repeats: int = 10) -> float:
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _tf32:
    """TF32 products on CUDA (as training uses them) inside the block."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def __enter__(self) -> None:
        import torch

        self.before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.device.type == "cuda"

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.before


def _tiny_model_config(out: Path) -> Path:
    from audit.data.tinyclip import MODEL_CONFIG

    folder = Path(tempfile.mkdtemp(prefix="msae-gpu-check-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "tinyclip.json"
    path.write_text(json.dumps(MODEL_CONFIG), encoding="utf-8")
    return path


def _junit_summary(xml: Path) -> dict:
    if not xml.exists():
        return {"error": "pytest wrote no report"}
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    failed = []
    for case in suite.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            message = (problem.get("message") or "").strip().splitlines()[:1]
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                           "message": message[0][:300] if message else ""})  # fmt: skip
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "seconds": float(suite.get("time", 0)), "failed_tests": failed}


def run_parts(run: Run, only: set[str] | None) -> dict[str, dict]:
    parts: dict[str, dict] = {}
    for name, part in PARTS:
        limit = min(run.config["limits"].get(name, 60), run.left())
        if only is not None and name not in only:
            continue
        if limit < 15:
            parts[name] = {"status": "skipped", "error": "the time budget is spent"}
            continue
        started = time.monotonic()
        try:
            figures = part(run, limit)
            status = "failed" if figures.get("error") or figures.get("failed_tests") else "ok"
            parts[name] = {"status": status, "figures": figures}
        except subprocess.TimeoutExpired:
            parts[name] = {"status": "timeout", "error": f"stopped after {limit:.0f} s"}
        except Exception as exc:  # recorded; the next part still runs
            parts[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
        parts[name]["seconds"] = round(time.monotonic() - started, 1)
        print(f"{name:12s} {parts[name]['status']:8s} {parts[name]['seconds']:6.1f} s", flush=True)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, any device")
    default_out = (
        Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "reports" / "gpu_check"
    )
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--budget", type=float, default=465.0, help="seconds for all parts")
    parser.add_argument("--only", default=None, help="comma-separated parts to run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.budget, args.smoke)
    started = time.monotonic()
    only = {p.strip() for p in args.only.split(",")} if args.only else None
    parts = run_parts(run, only)
    summary = {
        "schema": "msae-audit/gpu-check",
        "version": 1,
        "mode": "smoke" if args.smoke else "full",
        "seconds": round(time.monotonic() - started, 1),
        "parts": parts,
    }
    summary["goals"] = goals(summary)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(summary)
    (args.out / "gpu_check.md").write_text(markdown, encoding="utf-8")
    run.log.close()
    print(markdown)


if __name__ == "__main__":
    main()
