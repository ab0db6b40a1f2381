"""SAEs and vocabularies on the Hugging Face Hub, named ``hf:OWNER/REPO[/PATH][@REVISION]``.

Files are fetched with ``huggingface_hub`` into its ordinary cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read from the environment at call time, and
``HF_HUB_OFFLINE=1`` never touches the network (``HF_ENDPOINT`` picks a mirror). What ``PATH`` names:

* a reference ``.pt``/``.pth`` file (the paper's format, read with ``weights_only=True``; its
  name records the architecture and the CLIP model, see :mod:`audit.sae.reference`);
* a ``.safetensors`` file of ours (its ``config.json`` is fetched from the same folder);
* a folder holding our ``config.json`` + ``sae.safetensors`` (the repository root without PATH);
* for a repository of :data:`RELEASES`, nothing or a release's folder picks that release.

Without network a cached file is used; a missing one is a one-line :class:`InputError` naming the
repository and the cache, after a single connection attempt (no retries with back-off).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from audit.errors import InputError, first_line

PREFIX = "hf:"
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: Seconds for the one metadata request that tells "offline" from "online".
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf:OWNER/REPO[/PATH][@REVISION]``."""

    repo_id: str
    path: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.path}" if self.path else ""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{PREFIX}{self.repo_id}{tail}{rev}"

    def with_path(self, path: str) -> HubRef:
        return HubRef(self.repo_id, path, self.revision)


@dataclass(frozen=True)
class Release:
    """A trained SAE the paper's authors publish; its settings are read from its file name."""

    name: str
    repo_id: str
    filename: str
    description: str

    @property
    def ref(self) -> HubRef:
        return HubRef(self.repo_id, self.filename)

    @property
    def short_ref(self) -> HubRef:
        """The release's folder, which :func:`resolve_hub_sae` expands to the file."""
        return HubRef(self.repo_id, str(PurePosixPath(self.filename).parent))

    def settings(self) -> dict[str, Any]:
        from audit.sae.reference import parse_reference_name

        return parse_reference_name(PurePosixPath(self.filename).name)


_L14 = "6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth"
#: The authors' released MSAEs (Zaigrajew et al., ICML 2025) whose file names are published
#: (scripts that download them name these paths; the repository may hold more, which load by
#: their full ``hf:`` path the same way). The first one of a repository is its default.
RELEASES: tuple[Release, ...] = (
    Release(
        "vit-l14-rw",
        "WolodjaZ/MSAE",
        f"ViT-L_14/centered/{_L14}",
        "MSAE (RW) on CC3M CLIP ViT-L/14 image embeddings, mean-centred",
    ),
    Release(
        "vit-l14-rw-nomean",
        "WolodjaZ/MSAE",
        f"ViT-L_14/not_centered/{_L14}",
        "the same trained without mean-centring",
    ),
)
#: The vocabulary file each release repository ships (``--vocab hf:OWNER/REPO`` picks it).
VOCABULARIES = {"WolodjaZ/MSAE": "clip_disect_20k.txt"}


def is_hub_ref(spec: object) -> bool:
    return isinstance(spec, (str, os.PathLike)) and str(spec).startswith(PREFIX)


def parse_hub_ref(spec: str) -> HubRef:
    """``hf:OWNER/REPO[/PATH][@REVISION]`` → :class:`HubRef`.

    >>> parse_hub_ref("hf:WolodjaZ/MSAE/ViT-L_14/centered/x.pth@e6a8524")
    HubRef(repo_id='WolodjaZ/MSAE', path='ViT-L_14/centered/x.pth', revision='e6a8524')
    >>> parse_hub_ref("hf:me/saes")
    HubRef(repo_id='me/saes', path=None, revision=None)
    """
    text = str(spec)
    body = text[len(PREFIX) :] if text.startswith(PREFIX) else text
    body, at, revision = body.partition("@")
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        raise InputError(f"{text}: expected hf:OWNER/REPO[/PATH][@REVISION]")
    path_parts = parts[2:]
    if any(p in ("", ".", "..") for p in path_parts):
        raise InputError(f"{text}: the path inside the repository must not contain '', '.' or '..'")
    if at and not revision:
        raise InputError(f"{text}: empty revision after '@'")
    return HubRef("/".join(parts[:2]), "/".join(path_parts) or None, revision or None)


# ------------------------------------------------------------------------------------------
# What a reference names
# ------------------------------------------------------------------------------------------


def resolve_hub_sae(spec: str) -> Path:
    """Download (or find in the cache) the SAE ``spec`` names; returns the local file or folder
    :func:`audit.sae.load_sae` reads."""
    ref = _release_shortcut(parse_hub_ref(spec))
    path = ref.path
    suffix = PurePosixPath(path).suffix if path else ""
    if suffix in (".pt", ".pth"):
        return download(ref)
    if suffix == ".safetensors":
        weights = download(ref)
        download(ref.with_path(str(PurePosixPath(path).parent / "config.json")))
        return weights
    folder = f"{path}/" if path else ""
    download(ref.with_path(f"{folder}config.json"))
    return download(ref.with_path(f"{folder}sae.safetensors")).parent


def resolve_vocabulary(spec: str) -> str:
    """``spec`` unchanged, or the local path of the ``hf:`` vocabulary file it names."""
    if not is_hub_ref(spec):
        return spec
    ref = parse_hub_ref(spec)
    if ref.path is None:
        if ref.repo_id not in VOCABULARIES:
            raise InputError(f"{spec}: name the vocabulary file (hf:OWNER/REPO/FILE)")
        ref = ref.with_path(VOCABULARIES[ref.repo_id])
    return str(download(ref))


def _release_shortcut(ref: HubRef) -> HubRef:
    """A release repository without a path, or with a release's folder, means that release."""
    releases = [r for r in RELEASES if r.repo_id == ref.repo_id]
    if not releases:
        return ref
    if ref.path is None:
        return ref.with_path(releases[0].filename)
    matching = [r for r in releases if str(PurePosixPath(r.filename).parent) == ref.path]
    return ref.with_path(matching[0].filename) if len(matching) == 1 else ref


# ------------------------------------------------------------------------------------------
# The cache and the download
# ------------------------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """Where ``huggingface_hub`` keeps downloads, from the environment as it is now."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = env.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _endpoint() -> str | None:
    """``HF_ENDPOINT`` (a mirror) as set now; ``None``: huggingface_hub's default."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def cached_file(ref: HubRef) -> Path | None:
    """The cached copy of ``ref``'s file, without any network access; ``None`` when absent."""
    from huggingface_hub import try_to_load_from_cache

    assert ref.path is not None
    found = try_to_load_from_cache(
        ref.repo_id, ref.path, cache_dir=hub_cache_dir(), revision=ref.revision
    )
    return Path(found) if isinstance(found, str) else None


def download(ref: HubRef) -> Path:
    """The local path of ``ref``'s file: fetched into the cache when online, else the cached
    copy; a missing repository, file or revision, or no network and no copy, is an InputError."""
    import huggingface_hub as hub
    from huggingface_hub import errors

    assert ref.path is not None
    cache = hub_cache_dir()
    unreachable = "HF_HUB_OFFLINE is set" if hub_offline() else None
    if unreachable is None:
        # A commit hash never changes: a cached copy needs no request.
        pinned = cached_file(ref) if ref.revision and _COMMIT.match(ref.revision) else None
        if pinned is not None:
            return pinned
        unreachable = _probe(ref)
    kwargs: dict[str, Any] = {"revision": ref.revision, "cache_dir": cache, "endpoint": _endpoint()}
    try:
        if unreachable is None:
            return Path(hub.hf_hub_download(ref.repo_id, ref.path, **kwargs))
        return Path(hub.hf_hub_download(ref.repo_id, ref.path, local_files_only=True, **kwargs))
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as exc:
        why = unreachable or first_line(exc)
        raise InputError(
            f"{ref}: not in the Hugging Face cache {cache} and the Hub cannot be reached "
            f"({why}); download it once with network access (or set HF_HOME to a cache that "
            "holds it)"
        ) from exc
    except Exception as exc:
        raise _hub_error(ref, exc) from exc


def _probe(ref: HubRef) -> str | None:
    """One metadata request without retries: ``None`` when the Hub answers for the file, the
    reason when it cannot be reached; a missing repository, file or revision raises."""
    import huggingface_hub as hub
    from huggingface_hub import errors

    url = hub.hf_hub_url(ref.repo_id, ref.path, revision=ref.revision, endpoint=_endpoint())
    try:
        hub.get_hf_file_metadata(url, timeout=CONNECT_TIMEOUT)
    except Exception as exc:
        definitive = (
            errors.RepositoryNotFoundError,
            errors.RevisionNotFoundError,
            _remote_missing(),
            errors.GatedRepoError,
        )
        if isinstance(exc, definitive):
            raise _hub_error(ref, exc) from exc
        return first_line(exc, 120)  # no connection, proxy, timeout, server error: try the cache
    return None


def _remote_missing() -> type[Exception]:
    # huggingface_hub 1.x split "not on the Hub" (RemoteEntryNotFoundError) from "not cached"
    # (LocalEntryNotFoundError, also an EntryNotFoundError); older releases have only the latter.
    from huggingface_hub import errors

    return getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


def _hub_error(ref: HubRef, exc: BaseException) -> InputError:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        what = "is gated: accept its terms on huggingface.co and log in (hf auth login)"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        what = f"repository {ref.repo_id} not found (or private: log in with hf auth login)"
    elif isinstance(exc, errors.RevisionNotFoundError):
        what = f"revision {ref.revision} not found in {ref.repo_id}"
    elif isinstance(exc, _remote_missing()):
        what = f"{ref.repo_id} has no file {ref.path}"
    else:
        what = f"download failed ({type(exc).__name__}: {first_line(exc, 160)})"
    return InputError(f"{ref}: {what}")
