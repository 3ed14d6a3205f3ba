"""Hub IDs as model arguments (onnxspec.pipeline.hub): the files chosen for download, the
Hugging Face cache read offline and when the Hub cannot be reached, the error when neither
works, a local folder winning over a Hub ID. No test touches the network: the cache is built
here, in the ``models--org--name`` layout, from a tiny model saved with ``save_pretrained``."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import constants

from onnxspec.errors import ModelLoadError
from onnxspec.pipeline import hub
from onnxspec.pipeline.hub import cache_folder, is_hub_id, model_folder, wanted_files
from onnxspec.pipeline.loading import load_model, read_source
from tests.tiny import tiny_folder

REPO = "tiny-org/tiny-bert"
COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40


def write_cache(cache: Path, repo: str, source: Path, commit: str, ref: str = "main") -> Path:
    """Put the files of ``source`` in ``cache`` as huggingface_hub lays out a download:
    ``blobs/<sha256>``, ``snapshots/<commit>/<name>`` linking to the blob, ``refs/<ref>``."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tiny_folder("bert", "text-classification", tmp_path_factory.mktemp("saved") / "tiny-bert", seed=1))


@pytest.fixture
def cache(tmp_path: Path, saved: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding REPO at COMMIT (refs/main), named by HF_HUB_CACHE."""
    root = tmp_path / "hf-cache"
    write_cache(root, REPO, saved, COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return root


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the socket is: connecting is refused


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """Online mode, with the Hub at a closed local port."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    return endpoint


# --- which arguments are Hub IDs ------------------------------------------------------------


@pytest.mark.parametrize("model", ["bert-base-uncased", "org/name", "Org_1/name.v2-x"])
def test_hub_ids(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_hub_id(model)


@pytest.mark.parametrize("model", ["./org/name", "/abs/org/name", "a/b/c", "~/models/x", "org/na..me", "org//name", "org/name/"])
def test_paths_are_not_hub_ids(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id(model)
    assert model_folder(model) == model  # left to the loader, which says the folder does not exist


def test_a_local_folder_wins_over_a_hub_id(tmp_path: Path, saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved, tmp_path / "tiny-org" / "tiny-bert")
    monkeypatch.setattr(hub, "_from_hub", lambda *a: pytest.fail("a local folder must not be looked up on the Hub"))
    monkeypatch.setattr(hub, "_from_cache", lambda *a: pytest.fail("a local folder must not be looked up in the cache"))
    assert not is_hub_id(REPO)
    assert model_folder(REPO) == REPO
    assert read_source(REPO).folder == REPO
    with pytest.raises(ModelLoadError, match="local folder.*drop --revision"):
        model_folder(REPO, revision="main")


# --- the files downloaded -------------------------------------------------------------------

REPO_FILES = [
    ".gitattributes", "README.md", "assets/diagram.png", "config.json", "generation_config.json",
    "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot",
    "onnx/model.onnx", "onnx/model_quantized.onnx", "openvino/openvino_model.bin",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "preprocessor_config.json",
    "additional_chat_templates/tools.jinja", "training_args.bin",
]


def test_wanted_files_are_config_weights_tokenizer_and_processor_only() -> None:
    assert set(wanted_files(REPO_FILES)) == {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.txt", "preprocessor_config.json", "additional_chat_templates/tools.jinja",
    }


def test_wanted_files_prefer_sharded_safetensors_and_fall_back_to_bin() -> None:
    sharded = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
               "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert set(wanted_files(sharded)) == set(sharded[:4])
    bins = ["config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "tf_model.h5"]
    assert set(wanted_files(bins)) == set(bins[:4])
    assert set(wanted_files(["config.json", "pytorch_model.bin", "onnx/model.onnx"])) == {"pytorch_model.bin", "config.json"}


def test_wanted_files_of_gguf_repos() -> None:
    one = ["README.md", "tiny.Q8_0.gguf"]
    assert wanted_files(one) == ("tiny.Q8_0.gguf",)
    several = ["tiny.Q8_0.gguf", "tiny.F16.gguf", "README.md"]
    assert wanted_files(several, "tiny.F16.gguf") == ("tiny.F16.gguf",)
    with pytest.raises(ModelLoadError, match="2 GGUF files.*--gguf-file"):
        wanted_files(several, repo="org/x")
    with pytest.raises(ModelLoadError, match="'tiny.F32.gguf' is not in Hub repo 'org/x'.*'tiny.F16.gguf'"):
        wanted_files(several, "tiny.F32.gguf", repo="org/x")
    with pytest.raises(ModelLoadError, match="not a transformers model: it has no config.json"):
        wanted_files(["README.md", "onnx/model.onnx"], repo="org/x")


def test_online_downloads_only_the_wanted_files_at_the_commit_looked_up(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub answering (stood in for by the two huggingface_hub calls): one bounded look-up,
    then ``snapshot_download`` of the chosen files at the commit it returned."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    calls: dict[str, object] = {}

    def model_info(self: object, repo_id: str, *, revision: str | None, timeout: float) -> SimpleNamespace:
        calls["info"] = (repo_id, revision, timeout)
        return SimpleNamespace(sha=OTHER_COMMIT, siblings=[SimpleNamespace(rfilename=f) for f in REPO_FILES])

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls["download"] = (repo_id, kwargs)
        return str(cache / "somewhere")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert model_folder(REPO, revision="v2") == str(cache / "somewhere")
    assert calls["info"] == (REPO, "v2", 3.0)
    repo_id, kwargs = calls["download"]  # type: ignore[misc]
    assert repo_id == REPO and kwargs["revision"] == OTHER_COMMIT and kwargs["cache_dir"] == str(cache)
    assert kwargs["allow_patterns"] == list(wanted_files(REPO_FILES)) and kwargs["etag_timeout"] == 3.0


# --- the cache: offline, and with the Hub unreachable ---------------------------------------


def test_offline_reads_the_cached_snapshot(cache: Path, offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "_from_hub", lambda *a: pytest.fail("HF_HUB_OFFLINE: the Hub must not be asked"))
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / COMMIT
    assert model_folder(REPO) == str(snapshot)
    source = read_source(REPO)
    assert source.folder == str(snapshot) and source.config_json["model_type"] == "bert"
    assert type(load_model(REPO, "text-classification")).__name__ == "BertForSequenceClassification"


def test_revision_reads_its_ref_and_cache_dir_wins_over_the_environment(
    tmp_path: Path, saved: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "other-cache"
    write_cache(root, REPO, saved, COMMIT)
    write_cache(root, REPO, saved, OTHER_COMMIT, ref="v1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    found = model_folder(REPO, revision="v1", cache_dir=root)
    assert found == str(root / f"models--{REPO.replace('/', '--')}" / "snapshots" / OTHER_COMMIT)
    assert model_folder(REPO, revision=COMMIT, cache_dir=root).endswith(COMMIT)


def test_hf_home_names_the_cache(tmp_path: Path, saved: Path, offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    write_cache(tmp_path / "home" / "hub", REPO, saved, COMMIT)
    assert cache_folder() == str(tmp_path / "home" / "hub")
    assert model_folder(REPO).endswith(COMMIT)


def test_unreachable_hub_falls_back_to_the_cache(cache: Path, unreachable: str) -> None:
    start = time.perf_counter()
    assert model_folder(REPO).endswith(COMMIT)
    assert time.perf_counter() - start < 5


# --- neither: one clear error, never a hang --------------------------------------------------


def _says(error: pytest.ExceptionInfo[ModelLoadError], *parts: str) -> None:
    text = str(error.value)
    for part in parts:
        assert part in text, f"{part!r} not in {text}"


def test_not_cached_and_offline(tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError) as e:
        read_source("org/absent")
    _says(e, "'org/absent' is not a local folder", f"not in the Hugging Face cache at {tmp_path / 'empty' / 'models--org--absent'}",
          "HF_HUB_OFFLINE", "`huggingface-cli download org/absent`", "pass a local model folder")


def test_not_cached_and_unreachable(tmp_path: Path, unreachable: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as e:
        model_folder("org/absent", revision="v3", cache_dir=tmp_path / "empty")
    assert time.perf_counter() - start < 5
    _says(e, "'org/absent' is not a local folder", "not in the Hugging Face cache at revision 'v3'",
          f"the Hub ({unreachable}) could not be reached", "`huggingface-cli download org/absent --revision v3`")


def test_a_hub_that_never_answers_is_given_up_after_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts the connection and says nothing: the look-up gives up after
    HF_HUB_ETAG_TIMEOUT seconds instead of hanging."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.perf_counter()
        with pytest.raises(ModelLoadError) as e:
            model_folder("org/absent", cache_dir=tmp_path / "empty")
        seconds = time.perf_counter() - start
    assert 0.9 < seconds < 4, seconds
    _says(e, "could not be reached", "Timeout")


def test_a_gguf_repo_from_the_cache(tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF repo (no config.json): its only .gguf file is read, or the one --gguf-file names."""
    pytest.importorskip("gguf")
    from tests.tiny_gguf import tiny_llama, write_gguf

    files = tmp_path / "files"
    files.mkdir()
    write_gguf(tiny_llama(seed=4), files / "tiny.F32.gguf")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    write_cache(tmp_path / "cache", "tiny-org/tiny-llama-gguf", files, COMMIT)
    for gguf_file in (None, "tiny.F32.gguf"):
        source = read_source("tiny-org/tiny-llama-gguf", gguf_file)
        assert source.gguf_file == "tiny.F32.gguf" and source.config_json["model_type"] == "llama"
        assert source.folder.endswith(COMMIT)
