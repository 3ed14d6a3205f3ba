"""A GGUF file loaded a tensor at a time through a scratch safetensors checkpoint: the same
weights as transformers' own GGUF loading, memory-mapped from files already removed."""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gguf")

from onnxspec.pipeline import gguf_stream, loading  # noqa: E402
from onnxspec.pipeline.loading import load_source_model, read_source  # noqa: E402
from tests.tiny_gguf import tiny_llama, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    return tiny_llama()


@pytest.fixture(scope="module")
def gguf_folder(source_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("gguf") / "tiny"
    folder.mkdir()
    write_gguf(source_model, folder / "tiny-llama.F32.gguf")
    return str(folder)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mapped_scratch() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "onnxspec-gguf-" in line]


def test_streamed_loading_gives_transformers_weights_memory_mapped(gguf_folder: str, source_model: torch.nn.Module, monkeypatch) -> None:
    import transformers

    source = read_source(gguf_folder)
    streamed = load_source_model(source, "text-generation")
    assert _mapped_scratch() and all("(deleted)" in line for line in _mapped_scratch())  # file-backed, the folder gone
    got = _state(streamed)
    del streamed
    monkeypatch.setattr(gguf_stream, "_PER_TENSOR", ())  # transformers' own loading
    own = transformers.AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=source.gguf_file, dtype=torch.float32)
    want = _state(own)
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    for name, tensor in source_model.state_dict().items():  # F32 in the file: the source model exactly
        assert torch.equal(got[name], tensor), name


def test_an_architecture_transformers_loads_as_a_whole_falls_back(gguf_folder: str, monkeypatch) -> None:
    monkeypatch.setattr(gguf_stream, "_PER_TENSOR", ())
    source = read_source(gguf_folder)
    assert gguf_stream.load_streamed(object(), source.path, None) is None
    model = load_source_model(source, "text-generation")
    assert model.lm_head.weight.shape[0] == source.config_json["vocab_size"]


@pytest.mark.parametrize("shard_bytes", [1 << 28, 40_000], ids=["one-shard", "many-shards"])
def test_a_quantized_file_streams_to_transformers_weights_bit_for_bit(
    source_model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shard_bytes: int
) -> None:
    """Q8_0 and F16 tensors, dequantized a few rows at a time into several shards: the same bits
    as transformers' own loading of the file."""
    import transformers

    folder = tmp_path / "q"
    folder.mkdir()
    write_gguf(source_model, folder / "tiny-llama.Q8_0.gguf", quantized=True)
    monkeypatch.setattr(gguf_stream, "DEQUANTIZE_ROWS_BYTES", 32 * 4 * 7)  # 7 rows of 32 a block: the last short
    monkeypatch.setattr(gguf_stream, "SHARD_BYTES", shard_bytes)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen: list[int] = []
    real = gguf_stream._write_shards

    def counted(*args, **kwargs):
        real(*args, **kwargs)
        seen.append(sum(n.endswith(".safetensors") for n in os.listdir(args[-1])))

    monkeypatch.setattr(gguf_stream, "_write_shards", counted)
    source = read_source(folder)
    config = loading.config_from_json(source.config_json)
    streamed = gguf_stream.load_streamed(transformers.AutoModelForCausalLM, source.path, config, scratch_dir=str(scratch))
    assert streamed is not None and not os.listdir(scratch)  # the scratch folder is gone
    assert seen == [1] if shard_bytes > 1 << 20 else seen[0] > 2, seen
    got = _state(streamed)
    own = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=source.gguf_file, dtype=torch.float32)
    want = _state(own)
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
    q = source_model.model.layers[0].self_attn.q_proj.weight  # quantized, and llama's row order undone
    assert 0 < (got["model.layers.0.self_attn.q_proj.weight"] - q).abs().max() < 0.01


def test_a_tensor_dequantized_in_blocks_of_rows_is_the_tensor_dequantized_at_once(monkeypatch) -> None:
    from gguf import GGMLQuantizationType, dequantize, quantize

    rng = np.random.default_rng(0)
    values = rng.standard_normal((37, 64)).astype(np.float32)
    data = quantize(values, GGMLQuantizationType.Q8_0)
    tensor = types.SimpleNamespace(data=data, tensor_type=GGMLQuantizationType.Q8_0)
    monkeypatch.setattr(gguf_stream, "DEQUANTIZE_ROWS_BYTES", 64 * 4 * 5)  # 5 rows a block: 8 blocks, the last short
    blocks = list(gguf_stream._row_blocks(tensor, dequantize))
    assert [len(b) for b in blocks] == [5] * 7 + [2]
    got = np.concatenate(blocks)
    want = dequantize(data, GGMLQuantizationType.Q8_0)
    assert got.dtype == np.float32 and got.shape == want.shape == (37, 64)
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - values).max() < 0.05  # and it is the tensor


def test_a_shard_header_reads_back_with_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    rng = np.random.default_rng(1)
    arrays = {"a.weight": rng.standard_normal((3, 5), dtype=np.float32), "b": np.arange(7, dtype=np.float32),
              "c.bias": rng.standard_normal(1, dtype=np.float32)}
    planned, offset = [], 0
    for name, array in arrays.items():
        tensor = types.SimpleNamespace(shape=array.shape, n_elements=array.size)
        planned.append(gguf_stream._Planned(name=name, tensor=tensor, offset=offset))
        offset += array.nbytes
    head = gguf_stream._header(planned)
    assert len(head) % 8 == 0
    (tmp_path / "s.safetensors").write_bytes(head + b"".join(a.tobytes() for a in arrays.values()))
    back = load_file(str(tmp_path / "s.safetensors"))
    assert sorted(back) == sorted(arrays)
    for name, array in arrays.items():
        assert back[name].dtype is torch.float32
        np.testing.assert_array_equal(back[name].numpy(), array)
