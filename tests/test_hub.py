"""Weights from the Hugging Face Hub: a fast, complete error offline; the cache used offline;
a real download when the Hub answers (a local stand-in for it, no internet needed)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from audit import hub
from audit.encoders import load_clip
from audit.errors import InputError
from tests.world_helpers import TINY_CONFIG, make_random_clip

REPO = "tester/tiny-clip"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, and downloads allowed (the suite disables them)."""
    import open_clip  # noqa: F401  (imported here, so that timings below leave its import out)
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv(hub.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


@pytest.fixture
def endpoint(monkeypatch):
    """Point huggingface_hub at a URL: ``endpoint(url)`` (what HF_ENDPOINT does at import)."""
    from huggingface_hub import constants

    def point(url: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        template = url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)

    return point


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> dict[str, bytes]:
    """The files of an ``hf-hub:`` open_clip model: its config and its weights."""
    _, weights, _ = make_random_clip(tmp_path_factory.mktemp("tiny"))
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    return {
        "open_clip_config.json": json.dumps(config).encode(),
        "open_clip_model.safetensors": weights.read_bytes(),
    }


def _commit(files: dict[str, bytes]) -> str:
    return hashlib.sha1(b"".join(sorted(files.values()))).hexdigest()


def _put_in_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub writes: refs/main → snapshots/<commit>/<file>."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = _commit(files)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


class SilentServer(str):
    """The URL of a port that accepts connections and never answers (a stalled proxy or
    firewall); :meth:`connections` counts the connections made to it so far."""

    sock: socket.socket
    accepted: int

    def connections(self) -> int:
        self.sock.setblocking(False)
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.accepted
            conn.close()
            self.accepted += 1


@pytest.fixture
def silent_server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = SilentServer(f"http://127.0.0.1:{sock.getsockname()[1]}")
    server.sock, server.accepted = sock, 0
    yield server
    sock.close()


@pytest.fixture
def fake_hub(tiny_repo):
    """A local stand-in for the Hub's file API (``/{repo}/resolve/{revision}/{file}``)."""
    commit = _commit(tiny_repo)
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            requests.append(f"{self.command} {self.path}")
            prefix = f"/{REPO}/resolve/"
            name = self.path.split("/")[-1]
            if not self.path.startswith(prefix) or name not in tiny_repo:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = tiny_repo[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def _assert_complete_line(message: str, *parts: str) -> None:
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    assert message.endswith("fill the cache"), message  # whole, not cut mid-word


def test_hf_hub_offline_fails_at_once_naming_model_tag_cache_and_the_way_out(
    hub_cache, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        load_clip("ViT-B-32-quickgelu", "openai", device="cpu")
    assert time.perf_counter() - started < 5.0
    _assert_complete_line(
        str(caught.value),
        "ViT-B-32",
        "'openai'",
        "HF_HUB_OFFLINE is set",
        "timm/vit_base_patch32_clip_224.openai",
        str(hub_cache),
        "--pretrained /path/to/",
    )


def test_a_hub_that_never_answers_fails_within_the_probe_timeout(
    hub_cache, endpoint, silent_server, monkeypatch
):
    endpoint(silent_server)
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 1.0)
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        load_clip(f"hf-hub:{REPO}", None, device="cpu")
    assert time.perf_counter() - started < 6.0  # not huggingface_hub's ~50 s of retries
    assert silent_server.connections() == 1  # one probe, no retries
    _assert_complete_line(
        str(caught.value),
        f"hf-hub:{REPO}",
        f"{silent_server} cannot be reached within 1 s (",
        "timed out",
    )


def test_the_cli_gives_one_line_and_exit_code_2(cli, hub_cache, endpoint, monkeypatch, tmp_path):
    endpoint("http://127.0.0.1:9")  # nothing listens: refused at once
    words = tmp_path / "words.txt"
    words.write_text("red\nblue\n")
    started = time.perf_counter()
    r = cli("embed", "texts", words, "--model", "ViT-B-32-quickgelu", "--pretrained", "openai",
            "--out", tmp_path / "s")  # fmt: skip
    assert time.perf_counter() - started < 15.0
    assert r.exit_code == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: open_clip model ViT-B-32"), r.stderr
    _assert_complete_line(lines[0], "'openai'", str(hub_cache), "http://127.0.0.1:9")


def test_cached_weights_load_offline_without_touching_the_network(
    hub_cache, endpoint, silent_server, tiny_repo, monkeypatch
):
    _put_in_cache(hub_cache, REPO, tiny_repo)
    endpoint(silent_server)  # were it asked, huggingface_hub would wait and retry
    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 0.5)
    started = time.perf_counter()
    clip = load_clip(f"hf-hub:{REPO}", None, device="cpu")
    assert time.perf_counter() - started < 10.0
    assert silent_server.connections() == 1  # the one probe; the weights come from the cache
    assert clip.embed_dim == TINY_CONFIG["embed_dim"] and clip.model_id == f"hf-hub:{REPO}"
    assert np.isfinite(clip.encode_texts(["a red circle"])).all()


def test_online_the_weights_are_downloaded_into_the_cache(hub_cache, endpoint, fake_hub, tiny_repo):
    url, requests = fake_hub
    endpoint(url)
    assert hub.offline_reason() is None
    clip = load_clip(f"hf-hub:{REPO}", None, device="cpu")
    assert clip.embed_dim == TINY_CONFIG["embed_dim"]
    assert any(r.startswith("GET ") and r.endswith("open_clip_model.safetensors") for r in requests)
    assert hub.is_cached(hub.hub_files(f"hf-hub:{REPO}", None))  # type: ignore[arg-type]
    downloaded = next(hub_cache.rglob("open_clip_model.safetensors"))
    assert downloaded.read_bytes() == tiny_repo["open_clip_model.safetensors"]


def test_weights_that_need_no_hub_are_not_checked():
    assert hub.hub_files("ViT-B-32", "/some/checkpoint.pt") is None
    assert hub.hub_files("local-dir:/models/x", None) is None
    files = hub.hub_files("ViT-B-32-quickgelu", "openai")
    assert files is not None and files.repo == "timm/vit_base_patch32_clip_224.openai"
    assert files.groups == (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
