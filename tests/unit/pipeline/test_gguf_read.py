"""onnxspec's compact GGUF reader reads what the ``gguf`` package's reader reads (keys, values,
types, tensors and their bytes), and transformers, reading through it, makes the same config and
the same tokenizer files as with its own reader."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from onnxspec.errors import ModelLoadError  # noqa: E402
from onnxspec.pipeline import gguf_read  # noqa: E402
from onnxspec.pipeline.gguf_read import compact_gguf_reader, drop_pages, read_gguf, reader_view  # noqa: E402
from tests.tiny_gguf import EXTRA_METADATA, tiny_llama, write_gguf  # noqa: E402

NAME = "tiny-llama.gguf"


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    return tiny_llama(seed=3)


@pytest.fixture(scope="module", params=["f32", "quantized"])
def gguf_path(request: pytest.FixtureRequest, source_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp(f"gguf-{request.param}")
    return write_gguf(source_model, folder / NAME, quantized=request.param == "quantized", extra_metadata=True)


def _plain(value: object) -> object:
    """A ``gguf.GGUFReader`` field's contents, or a compact value, as plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def test_the_compact_reader_reads_what_ggufreader_reads(gguf_path: str) -> None:
    want = gguf.GGUFReader(gguf_path)
    got = read_gguf(gguf_path)
    assert list(got.fields) == [k for k in want.fields if not k.startswith("GGUF.")]
    for key, value in got.fields.items():
        field = want.fields[key]
        assert got.types[key][0] == field.types[0], key
        assert _plain(value) == field.contents(), key
    for key, (value, _kind) in EXTRA_METADATA.items():  # and the values written, every value type
        if isinstance(value, float):
            assert got.fields[key] == pytest.approx(value, rel=1e-7), key
        else:
            assert _plain(got.fields[key]) == value, key
    assert got.types["tiny.floats"] == (gguf_read.ARRAY, int(gguf.GGUFValueType.FLOAT32))
    assert got.fields["tiny.floats"].dtype == np.float32
    assert got.types["tokenizer.ggml.tokens"] == (gguf_read.ARRAY, gguf_read.STRING)
    assert got.data_start == want.data_offset and got.alignment == want.alignment
    assert [t.name for t in got.tensors] == [t.name for t in want.tensors]
    for mine, theirs in zip(got.tensors, want.tensors, strict=True):
        assert mine.tensor_type == theirs.tensor_type and mine.dims == tuple(theirs.shape.tolist()), mine.name
        assert (mine.n_elements, mine.n_bytes, mine.data_offset) == (theirs.n_elements, theirs.n_bytes, theirs.data_offset)
        assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape, mine.name
        assert mine.data.tobytes() == theirs.data.tobytes(), mine.name
        assert not mine.data.flags.writeable
    kinds = {t.tensor_type.name for t in got.tensors}
    assert kinds == ({"F32", "F16", "Q8_0"} if "quantized" in gguf_path else {"F32"})


def test_without_strings_a_string_array_is_its_length(gguf_path: str) -> None:
    full, short = read_gguf(gguf_path), read_gguf(gguf_path, strings=False)
    assert short.fields["tokenizer.ggml.tokens"] == len(full.fields["tokenizer.ggml.tokens"]) == 260
    assert short.fields["tokenizer.ggml.merges"] == 2 and short.fields["tiny.words"] == 4
    assert [t.name for t in short.tensors] == [t.name for t in full.tensors]


def test_transformers_reads_the_same_fields_through_the_view(gguf_path: str) -> None:
    from transformers.integrations.ggml import _gguf_parse_value

    want, got = gguf.GGUFReader(gguf_path), reader_view(gguf_path)
    assert list(got.fields) == list(want.fields)
    for key, field in want.fields.items():
        mine = got.fields[key]
        assert list(mine.data) == list(field.data) and mine.types == field.types, key
        assert len(mine.parts) == len(field.parts), key
        for a, b in zip(mine.parts, field.parts, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), key
        assert mine.parts[-1].tobytes() == field.parts[-1].tobytes()
        values = [_gguf_parse_value(mine.parts[i], mine.types) for i in mine.data]
        assert values == [_gguf_parse_value(field.parts[i], field.types) for i in field.data], key
    assert [t.name for t in got.tensors] == [t.name for t in want.tensors]


def test_transformers_config_and_tokenizer_are_the_same_through_the_compact_reader(gguf_path: str, tmp_path: Path) -> None:
    import transformers

    folder, name = os.path.split(gguf_path)
    want = transformers.AutoConfig.from_pretrained(folder, gguf_file=name).to_json_string()
    real = gguf.GGUFReader
    with compact_gguf_reader():
        assert gguf.GGUFReader is reader_view
        got = transformers.AutoConfig.from_pretrained(folder, gguf_file=name).to_json_string()
    assert gguf.GGUFReader is real
    assert got == want
    transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp_path / "theirs")
    with compact_gguf_reader():
        transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp_path / "ours")
    files = sorted(os.listdir(tmp_path / "theirs"))
    assert "tokenizer.json" in files and files == sorted(os.listdir(tmp_path / "ours"))
    _match, mismatch, errors = filecmp.cmpfiles(tmp_path / "theirs", tmp_path / "ours", files, shallow=False)
    assert not mismatch and not errors


def test_the_real_reader_comes_back_after_an_error(gguf_path: str) -> None:
    real = gguf.GGUFReader
    with pytest.raises(RuntimeError, match="boom"), compact_gguf_reader():
        raise RuntimeError("boom")
    assert gguf.GGUFReader is real
    with pytest.raises(ValueError, match="only reads"):
        reader_view(gguf_path, mode="r+")


def test_dropping_a_tensors_pages_keeps_its_bytes(gguf_path: str) -> None:
    file = read_gguf(gguf_path)
    tensor = max(file.tensors, key=lambda t: t.n_bytes)
    before = tensor.data.tobytes()
    drop_pages(file, tensor.data)
    drop_pages(file, tensor.data[1:2])  # a block of rows, not page-aligned
    assert tensor.data.tobytes() == before
    with pytest.raises(ValueError, match="view over the GGUF file's map"):
        drop_pages(file, np.zeros(4))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:4000], "past the file's end|inside its header"),
        (lambda b: b[:100], "inside its header"),
        (lambda b: b"GGML" + b[4:], "GGUF magic"),
        (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "version 7"),
        (lambda b: b[:4] + (3).to_bytes(4, "big") + b[8:], "big-endian"),
        (lambda b: b[:10], "shorter than a GGUF header"),
    ],
    ids=["truncated-data", "truncated-header", "magic", "version", "big-endian", "tiny"],
)
def test_a_damaged_file_is_one_clear_error(gguf_path: str, tmp_path: Path, damage, message: str) -> None:
    if "quantized" in gguf_path:
        pytest.skip("one file is enough")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(Path(gguf_path).read_bytes()))
    with pytest.raises(ModelLoadError, match=message) as info:
        read_gguf(bad)
    assert str(bad) in str(info.value)
