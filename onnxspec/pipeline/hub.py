"""Hugging Face Hub IDs as model arguments: ``org/name`` resolved to a local snapshot folder.

:func:`model_folder` turns what was passed as ``--model`` (or the first argument of
:func:`onnxspec.export`) into a local folder:

- an existing local path always wins, even when it is spelled like a Hub ID (``org/name``);
- a path-like argument (absolute, ``./``, ``~``, more than one ``/``) is returned as it is, and
  the loader says it does not exist;
- a Hub ID is looked up on the Hub with a bounded timeout, and only the files an export reads
  are downloaded into the Hugging Face cache (:func:`wanted_files`: the config, the weights,
  the tokenizer and processor files, ``generation_config.json``);
- offline (``HF_HUB_OFFLINE=1``), or when the Hub cannot be reached, the cached snapshot
  (``<cache>/models--org--name/snapshots/<commit>/``, the commit read from ``refs/<revision>``)
  is used;
- when neither works, one :class:`~onnxspec.errors.ModelLoadError` says so and what to do.

The cache is ``cache_dir``, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``, read when called. The look-up (one request: the repo's commit and
file list) waits at most ``HF_HUB_ETAG_TIMEOUT`` seconds (default 10) for the Hub; a machine
with no route to it fails at once (no name resolution: 0.03 s measured) or after that timeout.
Once the Hub has answered, ``snapshot_download`` lists and fetches the files with
huggingface_hub's own timeouts (``HF_HUB_ETAG_TIMEOUT`` for metadata,
``HF_HUB_DOWNLOAD_TIMEOUT`` per read; its repo listing has none). The Hub's address is
``HF_ENDPOINT``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from onnxspec.errors import ModelLoadError
from onnxspec.pipeline.sidefiles import (
    CHAT_TEMPLATE_DIR,
    KNOWN_TOKENIZER_FILES,
    MODEL_FILES,
    PREPROCESSOR_FILES,
    TOKENIZER_CONFIG_FILES,
)

__all__ = ["cache_folder", "is_hub_id", "model_folder", "wanted_files"]

_SHARD = re.compile(r"^(?:model|pytorch_model)-\d+-of-\d+\.(?:safetensors|bin)$")
_HUB_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")

WEIGHTS_PREFERENCE = (
    ("model.safetensors.index.json", "model-*-of-*.safetensors"),
    ("model.safetensors", None),
    ("pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"),
    ("pytorch_model.bin", None),
)
"""The weight files transformers reads, best first: safetensors before ``.bin``, an index file
with its shards."""


def is_hub_id(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` is to be looked up on the Hub: no local path of that name exists, and it
    is spelled ``name`` or ``org/name`` (not absolute, not ``./`` or ``~``, one ``/`` at most)."""
    text = os.fspath(model)
    if os.path.exists(text) or not isinstance(text, str) or text.startswith((".", "~")) or os.path.isabs(text) or "\\" in text:
        return False
    if not _HUB_ID.match(text) or ".." in text or "--" in text or text.endswith((".", "-")):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def cache_folder(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The Hugging Face cache used: ``cache_dir``, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``,
    else huggingface_hub's default (``~/.cache/huggingface/hub``)."""
    if cache_dir is not None:
        return os.path.expanduser(os.fspath(cache_dir))
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return os.path.expanduser(env)
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def wanted_files(files: Iterable[str], gguf_file: str | None = None, *, repo: str = "") -> tuple[str, ...]:
    """The files of a Hub repo an export reads, from the list of its files.

    A transformers checkpoint (``config.json`` at the top): the configs, one set of weights
    (safetensors before ``.bin``, an index with its shards), the tokenizer and processor files.
    A GGUF repo: ``gguf_file``, or its only ``.gguf`` file (several: an error asking which). Files
    in sub-folders (``onnx/``, other formats) and other weight formats are never chosen, except
    the chat templates folder a tokenizer reads.
    """
    every = set(files)
    top = sorted(f for f in every if "/" not in f)
    who = f"Hub repo {repo!r}" if repo else "the Hub repo"
    if gguf_file is not None:
        if gguf_file not in every:
            ggufs = [f for f in sorted(every) if f.lower().endswith(".gguf")]
            raise ModelLoadError(
                f"GGUF file {gguf_file!r} is not in {who}: "
                + (f"its GGUF files are {', '.join(repr(g) for g in ggufs)}; pass one of these names as --gguf-file NAME" if ggufs else "it holds no .gguf file")
            )
        return tuple(f for f in (gguf_file, *MODEL_FILES) if f in every)
    if "config.json" not in top:
        ggufs = [f for f in top if f.lower().endswith(".gguf")]
        if len(ggufs) == 1:
            return (ggufs[0],)
        if ggufs:
            raise ModelLoadError(
                f"{who} holds {len(ggufs)} GGUF files and no config.json: {', '.join(repr(g) for g in ggufs)}; "
                f"say which one to export: pass gguf_file=NAME (--gguf-file NAME), e.g. --gguf-file {ggufs[0]}"
            )
        raise ModelLoadError(
            f"{who} is not a transformers model: it has no config.json and no .gguf file at its top "
            f"(files: {', '.join(top[:12]) or 'none'}); pass a model repo or a local model folder"
        )
    chosen: list[str] = []
    for first, shards in WEIGHTS_PREFERENCE:
        if first in top:
            chosen.append(first)
            if shards is not None:
                chosen += [f for f in top if fnmatch.fnmatch(f, shards) and _SHARD.match(f)]
            break
    names = (*MODEL_FILES, *TOKENIZER_CONFIG_FILES, *KNOWN_TOKENIZER_FILES, *PREPROCESSOR_FILES)
    chosen += [f for f in names if f in top]
    chosen += sorted(f for f in every if f.startswith(CHAT_TEMPLATE_DIR + "/") and f.endswith(".jinja"))
    return tuple(dict.fromkeys(chosen))


def _timeout() -> float:
    from huggingface_hub import constants

    raw = os.environ.get("HF_HUB_ETAG_TIMEOUT")
    try:
        return float(raw) if raw else float(constants.HF_HUB_ETAG_TIMEOUT)
    except ValueError:
        return float(constants.DEFAULT_ETAG_TIMEOUT)


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


def _http_errors() -> tuple[type[BaseException], ...]:
    """The base error of the HTTP client huggingface_hub uses (httpx2, or httpx before it)."""
    for name in ("httpx2", "httpx"):
        try:
            return (__import__(name).HTTPError,)
        except (ImportError, AttributeError):
            continue
    return ()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _from_hub(repo_id: str, revision: str | None, cache: str, gguf_file: str | None) -> tuple[str | None, str]:
    """Download what an export reads; ``(folder, "")``, or ``(None, why the Hub was not reached)``.

    A repo, revision or gated access the Hub refuses is an error at once (the cache is not asked).
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint, timeout = _endpoint(), _timeout()
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, timeout=timeout)
    except RevisionNotFoundError as e:
        raise ModelLoadError(f"Hub repo {repo_id!r} has no revision {revision!r}; pass a branch, tag or commit it has (--revision)") from e
    except GatedRepoError as e:
        raise ModelLoadError(
            f"Hub repo {repo_id!r} is gated: accept its conditions on {endpoint}/{repo_id} and log in "
            "(`huggingface-cli login`, or set HF_TOKEN), or pass a local folder"
        ) from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"{repo_id!r} is not a local folder, and the Hub ({endpoint}) has no model repo of that name (or it is "
            "private: log in with `huggingface-cli login` or set HF_TOKEN); check the spelling, or pass a local folder"
        ) from e
    except (*_http_errors(), HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        return None, f"the Hub ({endpoint}) could not be reached: {_first_line(e)}"
    files = wanted_files((s.rfilename for s in info.siblings or ()), gguf_file, repo=repo_id)
    try:
        folder = snapshot_download(
            repo_id, revision=info.sha, cache_dir=cache, allow_patterns=list(files), etag_timeout=timeout, endpoint=endpoint
        )
    except (*_http_errors(), HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise ModelLoadError(
            f"downloading {', '.join(files)} of Hub repo {repo_id!r} into {cache} failed: {_first_line(e)}; retry, or "
            f"download it with `huggingface-cli download {repo_id}` and pass the folder"
        ) from e
    return str(folder), ""


def _from_cache(repo_id: str, revision: str | None, cache: str, gguf_file: str | None) -> tuple[str | None, str]:
    """The cached snapshot of ``repo_id`` at ``revision``, or ``(None, what is missing)``."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns: list[str] | None = None
    tree = getattr(__import__("huggingface_hub"), "get_cached_repo_tree", None)
    if tree is not None:  # a snapshot downloaded with patterns: ask only for what was wanted
        try:
            listed = tree(repo_id, revision=revision, cache_dir=cache)
        except Exception:  # noqa: BLE001 - no listing cached (CachedRepoTreeNotFoundError, ...): nothing to check against
            listed = None
        if listed is not None:
            patterns = list(wanted_files((f.path for f in listed), gguf_file, repo=repo_id))
    try:
        return str(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True, allow_patterns=patterns)), ""
    except LocalEntryNotFoundError as e:
        storage = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
        if "incomplete" in str(e).lower():
            return None, f"its snapshot in the cache at {storage} is incomplete ({_first_line(e)})"
        at = f" at revision {revision!r}" if revision else ""
        return None, f"it is not in the Hugging Face cache{at} at {storage}"


def model_folder(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    gguf_file: str | None = None,
) -> str:
    """The local folder to read ``model`` from: itself when it is a local path (or no Hub ID),
    else the Hub snapshot of that ID (downloaded, or found in the cache; see the module doc).

    ``revision`` (a branch, tag or commit) and ``cache_dir`` apply to Hub IDs only; a
    ``revision`` with a local folder is refused (the folder is read as it is).
    """
    text = os.fspath(model)
    if not is_hub_id(text):
        if revision is not None and os.path.exists(text):
            raise ModelLoadError(
                f"revision {revision!r} (--revision) names a version of a Hub repo, but {text!r} is a local folder, "
                "which is read as it is (a local folder wins over a Hub ID of the same name); drop --revision"
            )
        return text
    cache = cache_folder(cache_dir)
    reasons: list[str] = []
    if _offline():
        reasons.append("the Hub was not asked: HF_HUB_OFFLINE is set")
    else:
        folder, why = _from_hub(text, revision, cache, gguf_file)
        if folder is not None:
            return folder
        reasons.append(why)
    folder, why = _from_cache(text, revision, cache, gguf_file)
    if folder is not None:
        return folder
    raise ModelLoadError(
        f"model {text!r} is not a local folder (none of that name exists here) and cannot be read as a Hub ID: "
        f"{why}, and {'; '.join(reasons)}. Download it on a connected machine with `huggingface-cli download {text}"
        + (f" --revision {revision}" if revision else "")
        + f"` (then copy its cache folder to {cache}), or pass a local model folder"
    )

