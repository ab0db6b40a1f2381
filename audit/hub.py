"""open_clip weights that come from the Hugging Face Hub: use the cache when offline, fail fast.

open_clip fetches a pretrained tag (``--pretrained openai``) and an ``hf-hub:org/repo`` model
with ``huggingface_hub``, which retries an unreachable Hub with back-off for about 25 s per
file before it even looks in its cache — and tries two files. :func:`hub_access` decides
before open_clip starts:

* online (the Hub answers a HEAD request within a few seconds): open_clip downloads or
  refreshes its cache as usual;
* offline (``HF_HUB_OFFLINE`` set, ``MSAE_AUDIT_NO_DOWNLOAD=1``, or the Hub unreachable) with
  the files in the cache: open_clip runs in offline mode and reads them at once;
* offline without them: one :class:`~audit.errors.InputError` naming the model and tag, the
  cache folder searched, and how to give a local checkpoint instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from audit.errors import InputError, first_line

#: Set to 1 to refuse anything that would download weights (the test suite and the demo).
NO_DOWNLOAD_ENV = "MSAE_AUDIT_NO_DOWNLOAD"
#: Seconds the Hub has to answer before it counts as unreachable.
PROBE_TIMEOUT_S = 5.0
HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class HubFiles:
    """What open_clip will fetch: from ``repo``, each group is one file under alternative
    names (it takes the first one present, safetensors first)."""

    repo: str
    groups: tuple[tuple[str, ...], ...]

    def describe(self) -> str:
        return ", ".join(" or ".join(names) for names in self.groups)


def hub_files(model: str, tag: str | None) -> HubFiles | None:
    """The Hub files open_clip needs for ``model`` with ``tag``, or None when it needs none
    (a local checkpoint, a ``local-dir:`` model, a tag open_clip downloads from a URL)."""
    import open_clip
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    weights = (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
    if model.startswith(HF_HUB_PREFIX):
        return HubFiles(model[len(HF_HUB_PREFIX) :], ((HF_CONFIG_NAME,), weights))
    if tag is None:
        return None
    location = open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "")
    if not location:
        return None
    repo, filename = os.path.split(location)
    if not filename or filename == HF_WEIGHTS_NAME:
        return HubFiles(repo, (weights,))
    stem, suffix = os.path.splitext(filename)
    names = (f"{stem}.safetensors", filename) if suffix in (".bin", ".pth") else (filename,)
    return HubFiles(repo, (names,))


def is_cached(files: HubFiles) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return all(
        any(isinstance(try_to_load_from_cache(files.repo, name), str) for name in names)
        for names in files.groups
    )


def offline_reason(timeout: float | None = None) -> str | None:
    """Why nothing can be downloaded now, or None when the Hub answers (within ``timeout``
    seconds, :data:`PROBE_TIMEOUT_S` by default)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    if os.environ.get(NO_DOWNLOAD_ENV) == "1":
        return f"downloads are disabled ({NO_DOWNLOAD_ENV}=1)"
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a later setting counts too.
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    ):
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as exc:  # any failure to talk to the Hub: DNS, refused, timeout, TLS
        return f"{constants.ENDPOINT} cannot be reached within {timeout:g} s ({first_line(exc)})"
    return None


@contextlib.contextmanager
def hub_access(model: str, tag: str | None) -> Iterator[None]:
    """Around open_clip's loading of ``model`` with ``tag`` (see the module doc)."""
    files = hub_files(model, tag)
    if files is None:
        yield
        return
    reason = offline_reason()
    if reason is None:
        yield
        return
    if not is_cached(files):
        raise InputError(_not_available(model, tag, files, reason))
    with _offline():
        yield


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    # huggingface_hub consults this flag on every request; set, it reads its cache at once.
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _not_available(model: str, tag: str | None, files: HubFiles, reason: str) -> str:
    from huggingface_hub import constants

    what = f"open_clip model {model}" + (f" with pretrained tag '{tag}'" if tag else "")
    if model.startswith(HF_HUB_PREFIX):
        local = "--model open_clip_config.json --pretrained open_clip_model.safetensors"
    else:
        local = f"--pretrained /path/to/{files.groups[-1][0]}"
    return (
        f"{what} is not available offline ({reason}): {files.repo} ({files.describe()}) is not "
        f"in the Hugging Face cache {constants.HF_HUB_CACHE} (set HF_HOME or HF_HUB_CACHE to use "
        f"another); give a local checkpoint ({local}) or run once with network access to fill "
        "the cache"
    )
