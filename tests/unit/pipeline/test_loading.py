"""Model loading (onnxspec.pipeline.loading): which file of a folder is read, the GGUF errors, the config
and model rebuilt from a tiny GGUF file, the config written beside the graphs."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import tempfile
from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onnxspec.pipeline import loading
from onnxspec.errors import ModelLoadError, OnnxSpecError
from onnxspec.pipeline.loading import (
    GGUF_PACKAGES,
    ModelSource,
    choose_gguf_file,
    default_task,
    exported_config_json,
    gguf_files,
    load_model,
    load_source_model,
    read_source,
    require_gguf_support,
)
from onnxspec.pieces.tasks import infer_task
from tests.tiny import tiny_folder
from tests.tiny_gguf import tiny_llama, write_gguf


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading must not touch the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    return tiny_llama(seed=3)


@pytest.fixture(scope="module")
def gguf_folder(source_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("gguf") / "tiny"
    folder.mkdir()
    write_gguf(source_model, folder / "tiny-llama.F32.gguf")
    return str(folder)


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"GGUF")
    return folder


def _without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name in missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --- which file is read ------------------------------------------------------------------


def test_gguf_files_lists_only_gguf_files_sorted(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "b.gguf", "a.GGUF", "notes.txt")
    (folder / "dir.gguf").mkdir()
    assert gguf_files(folder) == ("a.GGUF", "b.gguf")
    assert gguf_files(tmp_path / "absent") == ()


def test_the_only_gguf_file_of_a_folder_without_config_json_is_picked(tmp_path: Path) -> None:
    assert choose_gguf_file(_touch(tmp_path / "m", "model.Q4_K_M.gguf")) == "model.Q4_K_M.gguf"


def test_config_json_wins_over_a_gguf_file_unless_one_is_named(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "model.gguf", "config.json")
    assert choose_gguf_file(folder) is None
    assert choose_gguf_file(folder, "model.gguf") == "model.gguf"


def test_a_folder_with_neither_is_left_to_the_config_json_error(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "weights.bin")
    assert choose_gguf_file(folder) is None
    with pytest.raises(ModelLoadError, match="no config.json"):
        read_source(folder)


def test_several_gguf_files_and_no_name_list_them_and_say_how_to_choose(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "m.Q8_0.gguf", "m.Q4_1.gguf")
    with pytest.raises(ModelLoadError) as e:
        choose_gguf_file(folder)
    message = str(e.value)
    assert "'m.Q4_1.gguf', 'm.Q8_0.gguf'" in message and "--gguf-file" in message and "gguf_file=" in message
    assert isinstance(e.value, OnnxSpecError)


def test_a_missing_gguf_name_lists_what_is_there_with_close_matches(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "SmolLM2-135M.Q4_1.gguf", "SmolLM2-135M.Q8_0.gguf")
    with pytest.raises(ModelLoadError) as e:
        choose_gguf_file(folder, "SmolLM2-135M.Q4_0.gguf")
    message = str(e.value)
    assert "'SmolLM2-135M.Q4_0.gguf' is not in" in message
    assert "its GGUF files are 'SmolLM2-135M.Q4_1.gguf', 'SmolLM2-135M.Q8_0.gguf'" in message
    assert "Did you mean" in message and message.count("'SmolLM2-135M.Q4_1.gguf'") == 2


def test_a_gguf_name_in_a_folder_without_any(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds no .gguf file"):
        choose_gguf_file(_touch(tmp_path / "m", "config.json"), "model.gguf")
    with pytest.raises(ModelLoadError, match="does not exist"):
        choose_gguf_file(tmp_path / "absent", "model.gguf")


@given(
    ggufs=st.sets(st.from_regex(r"[a-z][a-z0-9_.-]{0,12}\.gguf", fullmatch=True), max_size=4),
    config_json=st.booleans(),
    named=st.booleans(),
)
def test_which_file_is_read_follows_the_rules(ggufs: set[str], config_json: bool, named: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = _touch(Path(tmp) / "m", *ggufs, *(("config.json",) if config_json else ()))
        name = min(ggufs) if named and ggufs else None
        if name is not None:
            assert choose_gguf_file(folder, name) == name  # a named file is always read
        elif config_json or not ggufs:
            assert choose_gguf_file(folder) is None  # config.json wins; nothing to pick
        elif len(ggufs) == 1:
            assert choose_gguf_file(folder) == next(iter(ggufs))
        else:
            with pytest.raises(ModelLoadError, match="--gguf-file"):
                choose_gguf_file(folder)


# --- missing packages ----------------------------------------------------------------------


@pytest.mark.parametrize("missing", [("gguf",), ("accelerate",), GGUF_PACKAGES])
def test_missing_gguf_packages_are_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]) -> None:
    _without(monkeypatch, *missing)
    with pytest.raises(ModelLoadError) as e:
        require_gguf_support("m/model.gguf")
    message = str(e.value)
    assert "\n" not in message
    assert all(f"'{m}'" in message for m in missing)
    assert "pip install 'onnxspec[gguf]'" in message and "pip install gguf accelerate" in message


def test_missing_gguf_package_stops_loading_before_transformers_runs(
    monkeypatch: pytest.MonkeyPatch, gguf_folder: str
) -> None:
    _without(monkeypatch, "gguf")
    import transformers

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers must not be asked to read the file")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fail)
    for call in (lambda: read_source(gguf_folder), lambda: load_model(gguf_folder, "text-generation")):
        with pytest.raises(ModelLoadError, match=r"pip install 'onnxspec\[gguf\]'"):
            call()


def test_packages_present_pass() -> None:
    require_gguf_support("model.gguf")  # the test environment installs the gguf extra


# --- reading a GGUF file ------------------------------------------------------------------------


def test_read_source_of_a_gguf_folder(gguf_folder: str, source_model: torch.nn.Module, no_network: None) -> None:
    source = read_source(gguf_folder)
    assert source.gguf_file == "tiny-llama.F32.gguf" and source.is_gguf
    assert source.path == os.path.join(gguf_folder, "tiny-llama.F32.gguf")
    config = source.config_json
    expected = source_model.config
    assert config["model_type"] == "llama"
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size"):
        assert config[key] == getattr(expected, key), key
    assert not config.get("architectures")  # GGUF files name no head ...
    assert default_task(source) == "text-generation"  # ... so the task comes from the format
    assert infer_task(config, default=default_task(source)) == "text-generation"
    with pytest.raises(TypeError):
        source.config_json["model_type"] = "bert"  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        source.gguf_file = "other.gguf"  # type: ignore[misc]


def test_default_task_of_each_source() -> None:
    assert default_task(ModelSource(folder="m", config_json={"model_type": "bert"})) == "feature-extraction"
    assert default_task(ModelSource(folder="m", config_json={"model_type": "llama"}, gguf_file="m.gguf")) == "text-generation"
    t5 = ModelSource(folder="m", config_json={"model_type": "t5", "is_encoder_decoder": True}, gguf_file="m.gguf")
    assert default_task(t5) == "text2text-generation"
    assert infer_task({"architectures": ["LlamaForCausalLM"]}, default="fill-mask") == "text-generation"


def test_a_corrupt_gguf_file_is_a_load_error(tmp_path: Path) -> None:
    folder = _touch(tmp_path / "m", "broken.gguf")
    with pytest.raises(ModelLoadError, match="cannot read the config of the GGUF file"):
        read_source(folder)


def test_load_model_from_gguf_has_the_source_weights_and_no_quantized_marks(
    gguf_folder: str, source_model: torch.nn.Module, no_network: None
) -> None:
    model = load_model(gguf_folder, "text-generation")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    expected = source_model.state_dict()
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected), "F32 weights must round-trip exactly"
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source_model(ids).logits, rtol=0, atol=0)


def test_load_source_model_reuses_the_config_read_from_the_gguf_file(
    gguf_folder: str, source_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    source = read_source(gguf_folder)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GGUF metadata must not be parsed again for the config")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fail)
    model = load_source_model(source, "text-generation")
    ids = torch.arange(12).reshape(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source_model(ids).logits, rtol=0, atol=0)


def test_load_model_of_a_transformers_folder_still_works(tmp_path: Path) -> None:
    folder = tiny_folder("bert", "text-classification", tmp_path / "bert")
    model = load_model(folder, "text-classification")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert read_source(folder).gguf_file is None


def test_a_config_json_without_weights_beside_gguf_files_points_at_them(gguf_folder: str, tmp_path: Path) -> None:
    folder = Path(tiny_folder("bert", "text-classification", tmp_path / "repo"))
    for name in os.listdir(folder):
        if name.endswith(".safetensors"):
            os.remove(folder / name)
    (folder / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=r"--gguf-file NAME \(model.Q4_K_M.gguf\)"):
        load_model(folder, "text-classification")


def test_pipeline_still_exports_load_model() -> None:
    from onnxspec.pipeline import core as pipeline
    assert pipeline.load_model is loading.load_model


# --- the config written beside the graphs -----------------------------------------------------


def test_exported_config_drops_the_gguf_marks_without_touching_the_model(source_model: torch.nn.Module) -> None:
    import transformers

    model = tiny_llama(seed=1)
    model.config.quantization_config = transformers.GgufConfig(gguf_file="x.gguf")  # as a caller's GGUF model has it
    before = model.config.to_json_string()
    data = exported_config_json(model)
    assert "quantization_config" not in data
    assert data["architectures"] == ["LlamaForCausalLM"]
    assert model.config.to_json_string() == before  # the caller's model is not changed
    json.dumps(data)


def test_exported_config_keeps_other_quantization_configs() -> None:
    model = tiny_llama(seed=1)
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    assert exported_config_json(model)["quantization_config"]["quant_method"] == "bitsandbytes"
