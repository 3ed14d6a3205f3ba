"""Convert a CTranslate2 (CT2) Whisper model folder into a transformers folder.

    python scripts/ct2_whisper.py CT2_DIR OUT_DIR [--model-bin PART ...]

CT2_DIR holds CT2's ``config.json``, ``model.bin`` and ``tokenizer.json`` (``vocabulary.txt`` is
used for a consistency check and for the timestamp tokens). A ``model.bin`` shipped in pieces is
read by naming the pieces in order with ``--model-bin``. OUT_DIR receives a folder that
``WhisperForConditionalGeneration.from_pretrained`` / ``pipeline("automatic-speech-recognition")``
load offline: config.json, model.safetensors (float32), generation_config.json, the tokenizer
files and preprocessor_config.json (WhisperFeatureExtractor).

The reader is written from CTranslate2's serializer (``ModelSpec._serialize`` in
``python/ctranslate2/specs/model_spec.py``, binary version 6) and nothing of CTranslate2 is
imported here. The format facts relied on (all little-endian):

* header: uint32 binary version (6), string spec name ("WhisperSpec"), uint32 spec revision
  (3 for WhisperSpec), uint32 variable count; a string is uint16 length (bytes + 1), the UTF-8
  bytes and a NUL byte;
* each variable: string name (scopes joined by "/"), uint8 rank, rank x uint32 dims, uint8 type
  id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16), uint32 byte count, the raw
  row-major data. Rank 0 variables are scalar options (num_heads, activation, pre_norm, ...);
* then uint32 alias count and pairs of strings (alias, target): a variable equal to an earlier
  one (in sorted order) is stored once, e.g. ``decoder/projection/weight`` ->
  ``decoder/embeddings/weight`` (tied output projection);
* quantized weights: a ``<name>`` of int8 comes with ``<name>_scale`` (float32, one per output
  row; for a 3-D conv weight one per output channel) and ``float = int8 / scale``; int16 has one
  scalar scale, same formula. ``*_weight_zero`` (AWQ/GPTQ pre-quantized) is refused.

Mapping (CT2 -> transformers), L = layer index:

* encoder/conv{1,2}/{weight,bias} -> model.encoder.conv{1,2}.{weight,bias} (same layout);
* encoder/position_encodings/encodings -> model.encoder.embed_positions.weight;
  decoder/position_encodings/encodings -> model.decoder.embed_positions.weight
  (Whisper has no position offset, so the rows are the table as is);
* {encoder,decoder}/layer_norm/{gamma,beta} -> model.{encoder,decoder}.layer_norm.{weight,bias};
  every CT2 ``layer_norm/gamma|beta`` is a LayerNorm ``weight|bias``;
* {enc,dec}/layer_L/self_attention/linear_0 = fused [q; k; v] rows -> self_attn.{q,k,v}_proj;
  its bias is [q_bias; zeros; v_bias] (Whisper's k_proj has no bias and CT2 pads zeros): the k
  part must be exactly zero and is dropped;
* {enc,dec}/layer_L/self_attention/linear_1 -> self_attn.out_proj;
  self_attention/layer_norm -> self_attn_layer_norm;
* decoder/layer_L/attention/linear_0 -> encoder_attn.q_proj; attention/linear_1 = fused [k; v]
  -> encoder_attn.{k,v}_proj (zero k bias, dropped); attention/linear_2 -> encoder_attn.out_proj;
  attention/layer_norm -> encoder_attn_layer_norm;
* {enc,dec}/layer_L/ffn/linear_0 -> fc1, ffn/linear_1 -> fc2, ffn/layer_norm -> final_layer_norm;
* decoder/embeddings/weight -> model.decoder.embed_tokens.weight; decoder/projection/weight ->
  proj_out.weight (an alias of the embeddings in Whisper: tie_word_embeddings stays true; a
  stored, different projection unties them; a projection bias is refused);
* scalars: {encoder,decoder}/num_heads -> {encoder,decoder}_attention_heads; the decoder options
  must say what Whisper is (activation 3 = GELU, pre_norm 1, scale_embeddings 0, alibi 0,
  start_from_zero_embedding 0; alibi_use_positive_positions 0 and scale_alibi 0 where stored),
  else the conversion stops; decoder/alignment_{heads,layer} are
  CT2 runtime settings with no transformers parameter (the alignment heads themselves come from
  CT2's config.json).

Dims come from the shapes: d_model and num_mel_bins from conv1, layer counts from the largest
``layer_L``, ffn dims from fc1, vocab size from the embeddings, max positions from the position
tables. CT2's config.json gives suppress_tokens, begin_suppress_tokens, alignment_heads and
(multilingual models only) the language ids; special token ids come from tokenizer.json by name.

Every CT2 variable must be used and every transformers parameter must be set with the expected
shape (the state dict is loaded with ``strict=True`` onto a meta-device model): anything left
over stops the conversion with the list of names. Weights stored as float16/bfloat16 are upcast
and int8/int16 ones dequantized to float32; the summary printed at the end says which.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUPPORTED_BINARY_VERSION = 6
SUPPORTED_SPEC = "WhisperSpec"
SUPPORTED_REVISION = 3

# type id -> numpy dtype, as in CTranslate2's DataType enum (types.h) / _dtype_to_type_id.
_TYPE_IDS = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: raw 16-bit patterns, widened below
}
_TYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}

# Scalar decoder options and the value a Whisper decoder must have. Anything else is refused.
_GELU = 3  # common_spec.Activation.GELU
_EXPECTED_DECODER_SCALARS = {
    "decoder/activation": _GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Written by some CT2 versions only (4.x when a spec is built anew); checked when present.
_OPTIONAL_DECODER_SCALARS = {
    "decoder/alibi_use_positive_positions": 0,
    "decoder/scale_alibi": 0,
}
# CT2 runtime settings with no transformers counterpart: read and accounted for, nothing more.
_RUNTIME_ONLY = ("decoder/alignment_heads", "decoder/alignment_layer")


class ConversionError(RuntimeError):
    """The CT2 model cannot be converted faithfully."""


@dataclass
class CT2Variable:
    name: str
    type_name: str
    array: np.ndarray  # as stored (bfloat16 kept as uint16 patterns)


@dataclass
class CT2Model:
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, CT2Variable]
    aliases: dict[str, str]  # alias -> stored variable

    def resolve(self, name: str) -> str:
        seen = set()
        while name in self.aliases:
            if name in seen:
                raise ConversionError(f"alias cycle at {name!r}")
            seen.add(name)
            name = self.aliases[name]
        return name

    def has(self, name: str) -> bool:
        return self.resolve(name) in self.variables


def read_ct2_model(parts: list[Path] | Path) -> CT2Model:
    """Parse a CT2 ``model.bin`` (given whole or as ordered pieces to concatenate)."""
    if isinstance(parts, (str, os.PathLike)):
        parts = [Path(parts)]
    data = b"".join(Path(p).read_bytes() for p in parts)
    view = memoryview(data)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise ConversionError(f"model.bin ends early at byte {pos} (truncated or not all parts given?)")
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return value

    def take_string() -> str:
        nonlocal pos
        length = take("H")
        raw = bytes(view[pos : pos + length])
        if len(raw) != length or not raw.endswith(b"\0"):
            raise ConversionError(f"bad string at byte {pos}")
        pos += length
        return raw[:-1].decode("utf-8")

    version = take("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ConversionError(
            f"CT2 binary version {version}; this reader knows version {SUPPORTED_BINARY_VERSION} only"
        )
    spec = take_string()
    revision = take("I")
    if spec != SUPPORTED_SPEC or revision != SUPPORTED_REVISION:
        raise ConversionError(
            f"model spec {spec!r} revision {revision}; expected {SUPPORTED_SPEC!r} revision {SUPPORTED_REVISION}"
        )
    variables: dict[str, CT2Variable] = {}
    for _ in range(take("I")):
        name = take_string()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank))
        type_id = take("B")
        nbytes = take("I")
        if type_id not in _TYPE_IDS:
            raise ConversionError(f"{name}: unknown type id {type_id}")
        dtype = _TYPE_IDS[type_id]
        count = int(np.prod(shape, dtype=np.int64)) if rank else 1
        if count * dtype.itemsize != nbytes:
            raise ConversionError(f"{name}: {nbytes} bytes for shape {shape} of {_TYPE_NAMES[type_id]}")
        if pos + nbytes > len(data):
            raise ConversionError(f"{name}: data runs past the end of model.bin (truncated?)")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)
        pos += nbytes
        if name in variables:
            raise ConversionError(f"variable {name!r} stored twice")
        variables[name] = CT2Variable(name, _TYPE_NAMES[type_id], array)
    aliases = {}
    for _ in range(take("I")):
        alias = take_string()
        aliases[alias] = take_string()
    if pos != len(data):
        raise ConversionError(f"{len(data) - pos} bytes left after the aliases: not a model.bin this reader understands")
    model = CT2Model(version, spec, revision, variables, aliases)
    for alias in aliases:
        if not model.has(alias):
            raise ConversionError(f"alias {alias!r} points to no stored variable")
    return model


def _widen(var: CT2Variable) -> np.ndarray:
    if var.type_name == "bfloat16":
        return (var.array.astype(np.uint32) << 16).view(np.float32)
    return var.array.astype(np.float32)


@dataclass
class _Reader:
    """Hands out CT2 tensors as float32 and remembers which stored names were used."""

    model: CT2Model
    used: set = field(default_factory=set)
    kinds: dict = field(default_factory=dict)  # how each stored tensor became float32

    def scalar(self, name: str) -> int:
        target = self.model.resolve(name)
        var = self.model.variables.get(target)
        if var is None or var.array.ndim != 0:
            raise ConversionError(f"scalar {name!r} missing")
        self.used.update({name, target})
        return int(var.array)

    def tensor(self, name: str) -> np.ndarray:
        target = self.model.resolve(name)
        var = self.model.variables.get(target)
        if var is None:
            raise ConversionError(f"CT2 variable {name!r} missing")
        self.used.update({name, target})
        if var.array.ndim == 0:
            raise ConversionError(f"{name!r} is a scalar, a tensor was expected")
        if self.model.has(target + "_zero"):
            raise ConversionError(f"{target}: pre-quantized weights with zero points are not supported")
        scale_name = target + "_scale"
        if self.model.has(scale_name):
            scale_target = self.model.resolve(scale_name)
            self.used.update({scale_name, scale_target})
            scale = _widen(self.model.variables[scale_target])
            values = var.array.astype(np.float32)
            if var.type_name == "int8":
                if scale.shape != (values.shape[0],):
                    raise ConversionError(f"{scale_name}: shape {scale.shape} for weight {values.shape}")
                out = values / scale.reshape((-1,) + (1,) * (values.ndim - 1))
            elif var.type_name == "int16":
                if scale.ndim != 0:
                    raise ConversionError(f"{scale_name}: int16 expects one scalar scale")
                out = values / scale
            else:
                raise ConversionError(f"{target}: a scale next to a {var.type_name} weight")
            self.kinds[target] = f"{var.type_name}->float32 (dequantized)"
            return np.ascontiguousarray(out, dtype=np.float32)
        if var.type_name in ("int8", "int16", "int32"):
            raise ConversionError(f"{target}: {var.type_name} weight without a scale")
        self.kinds[target] = f"{var.type_name}->float32" if var.type_name != "float32" else "float32"
        return np.ascontiguousarray(_widen(var))


def _split_rows(name: str, w: np.ndarray, parts: int) -> list[np.ndarray]:
    if w.shape[0] % parts:
        raise ConversionError(f"{name}: {w.shape[0]} rows do not split in {parts}")
    return np.split(w, parts, axis=0)


def _fused_projections(rd: _Reader, ct2: str, hf: str, names: tuple[str, ...], sd: dict) -> None:
    """A CT2 linear holding several Whisper projections stacked by rows (k has no bias)."""
    weights = _split_rows(ct2 + "/weight", rd.tensor(ct2 + "/weight"), len(names))
    biases = _split_rows(ct2 + "/bias", rd.tensor(ct2 + "/bias"), len(names))
    for proj, w, b in zip(names, weights, biases):
        sd[f"{hf}.{proj}.weight"] = w
        if proj == "k_proj":
            if np.any(b != 0):
                raise ConversionError(f"{ct2}/bias: the k part is not zero, Whisper's k_proj has no bias")
        else:
            sd[f"{hf}.{proj}.bias"] = b


def _linear(rd: _Reader, ct2: str, hf: str, sd: dict) -> None:
    sd[hf + ".weight"] = rd.tensor(ct2 + "/weight")
    sd[hf + ".bias"] = rd.tensor(ct2 + "/bias")


def _norm(rd: _Reader, ct2: str, hf: str, sd: dict) -> None:
    sd[hf + ".weight"] = rd.tensor(ct2 + "/gamma")
    sd[hf + ".bias"] = rd.tensor(ct2 + "/beta")


def _count_layers(model: CT2Model, stack: str) -> int:
    pat = re.compile(rf"^{stack}/layer_(\d+)/")
    idx = {int(m.group(1)) for n in list(model.variables) + list(model.aliases) if (m := pat.match(n))}
    if not idx or idx != set(range(max(idx) + 1)):
        raise ConversionError(f"{stack}: layer indices {sorted(idx)} are not 0..N-1")
    return max(idx) + 1


def ct2_to_state_dict(model: CT2Model) -> tuple[dict[str, np.ndarray], dict, _Reader]:
    """Every CT2 variable mapped to its transformers parameter; returns (state dict, dims, reader)."""
    rd = _Reader(model)
    for name, expected in _EXPECTED_DECODER_SCALARS.items():
        got = rd.scalar(name)
        if got != expected:
            raise ConversionError(f"{name} = {got}, a Whisper decoder has {expected}")
    for name, expected in _OPTIONAL_DECODER_SCALARS.items():
        if model.has(name) and rd.scalar(name) != expected:
            raise ConversionError(f"{name} = {rd.scalar(name)}, a Whisper decoder has {expected}")
    for name in _RUNTIME_ONLY:
        if model.has(name):
            rd.scalar(name)
    dims = {
        "encoder_attention_heads": rd.scalar("encoder/num_heads"),
        "decoder_attention_heads": rd.scalar("decoder/num_heads"),
        "encoder_layers": _count_layers(model, "encoder"),
        "decoder_layers": _count_layers(model, "decoder"),
    }
    sd: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(rd, f"encoder/{conv}", f"model.encoder.{conv}", sd)
    sd["model.encoder.embed_positions.weight"] = rd.tensor("encoder/position_encodings/encodings")
    _norm(rd, "encoder/layer_norm", "model.encoder.layer_norm", sd)
    for i in range(dims["encoder_layers"]):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _fused_projections(rd, c + "/self_attention/linear_0", h + ".self_attn", ("q_proj", "k_proj", "v_proj"), sd)
        _linear(rd, c + "/self_attention/linear_1", h + ".self_attn.out_proj", sd)
        _norm(rd, c + "/self_attention/layer_norm", h + ".self_attn_layer_norm", sd)
        _linear(rd, c + "/ffn/linear_0", h + ".fc1", sd)
        _linear(rd, c + "/ffn/linear_1", h + ".fc2", sd)
        _norm(rd, c + "/ffn/layer_norm", h + ".final_layer_norm", sd)

    sd["model.decoder.embed_tokens.weight"] = rd.tensor("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = rd.tensor("decoder/position_encodings/encodings")
    _norm(rd, "decoder/layer_norm", "model.decoder.layer_norm", sd)
    for i in range(dims["decoder_layers"]):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _fused_projections(rd, c + "/self_attention/linear_0", h + ".self_attn", ("q_proj", "k_proj", "v_proj"), sd)
        _linear(rd, c + "/self_attention/linear_1", h + ".self_attn.out_proj", sd)
        _norm(rd, c + "/self_attention/layer_norm", h + ".self_attn_layer_norm", sd)
        _linear(rd, c + "/attention/linear_0", h + ".encoder_attn.q_proj", sd)
        _fused_projections(rd, c + "/attention/linear_1", h + ".encoder_attn", ("k_proj", "v_proj"), sd)
        _linear(rd, c + "/attention/linear_2", h + ".encoder_attn.out_proj", sd)
        _norm(rd, c + "/attention/layer_norm", h + ".encoder_attn_layer_norm", sd)
        _linear(rd, c + "/ffn/linear_0", h + ".fc1", sd)
        _linear(rd, c + "/ffn/linear_1", h + ".fc2", sd)
        _norm(rd, c + "/ffn/layer_norm", h + ".final_layer_norm", sd)

    if model.has("decoder/projection/bias"):
        raise ConversionError("decoder/projection/bias: Whisper's proj_out has no bias")
    tied = model.resolve("decoder/projection/weight") == model.resolve("decoder/embeddings/weight")
    sd["proj_out.weight"] = rd.tensor("decoder/projection/weight")
    if not tied and np.array_equal(sd["proj_out.weight"], sd["model.decoder.embed_tokens.weight"]):
        tied = True

    leftover = sorted((set(model.variables) | set(model.aliases)) - rd.used)
    if leftover:
        raise ConversionError("CT2 variables left unmapped:\n  " + "\n  ".join(leftover))

    conv1 = sd["model.encoder.conv1.weight"]
    dims.update(
        d_model=conv1.shape[0],
        num_mel_bins=conv1.shape[1],
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        vocab_size=sd["model.decoder.embed_tokens.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        tie_word_embeddings=bool(tied),
    )
    return sd, dims, rd


# ----------------------------------------------------------------------------- tokenizer, configs

_NON_LANGUAGE = {
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>",
}


def _tokenizer_with_timestamps(ct2_dir: Path, vocab_size: int) -> tuple[dict, dict[str, int]]:
    """tokenizer.json, checked against vocabulary.txt, with the timestamp tokens it may lack."""
    tok = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids: dict[str, int] = dict(tok["model"]["vocab"])
    for added in tok["added_tokens"]:
        ids[added["content"]] = added["id"]
    by_id = {i: t for t, i in ids.items()}
    vocab_path = ct2_dir / "vocabulary.txt"
    if vocab_path.exists():
        lines = vocab_path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) != vocab_size:
            raise ConversionError(f"vocabulary.txt has {len(lines)} tokens, the embeddings {vocab_size}")
        bad = [i for i, t in by_id.items() if i < len(lines) and lines[i] != t]
        if bad:
            raise ConversionError(f"tokenizer.json and vocabulary.txt disagree at ids {bad[:10]}")
        next_id = max(by_id) + 1
        for i in range(next_id, len(lines)):
            if not re.fullmatch(r"<\|\d+\.\d\d\|>", lines[i]):
                raise ConversionError(f"vocabulary.txt id {i} {lines[i]!r} is not in tokenizer.json nor a timestamp")
            tok["added_tokens"].append({
                "id": i, "content": lines[i], "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": False,
            })
            ids[lines[i]] = i
    if max(ids.values()) >= vocab_size:
        raise ConversionError(f"token id {max(ids.values())} is past the vocab size {vocab_size}")
    return tok, ids


def _special_ids(ids: dict[str, int], ct2_config: dict, vocab_size: int) -> dict:
    def need(token: str) -> int:
        if token not in ids:
            raise ConversionError(f"tokenizer.json has no {token}")
        return ids[token]

    out = {
        "eot": need("<|endoftext|>"),
        "sot": need("<|startoftranscript|>"),
        "translate": need("<|translate|>"),
        "transcribe": need("<|transcribe|>"),
        "prev": need("<|startofprev|>"),
        "notimestamps": need("<|notimestamps|>"),
    }
    # OpenAI's rule (and transformers'): the multilingual vocabularies have 51865+ tokens.
    out["multilingual"] = vocab_size >= 51865
    lang_to_id = {}
    if out["multilingual"]:
        by_id = {i: t for t, i in ids.items()}
        for i in ct2_config.get("lang_ids") or []:
            token = by_id.get(i)
            if token is None or token in _NON_LANGUAGE or not re.fullmatch(r"<\|[a-zA-Z_-]+\|>", token):
                raise ConversionError(f"config.json lang_ids: {i} is {token!r}, not a language token")
            lang_to_id[token] = i
        if not lang_to_id:
            raise ConversionError("a multilingual model whose config.json lists no lang_ids")
    out["lang_to_id"] = lang_to_id
    return out


def _write_tokenizer(out_dir: Path, tok: dict) -> None:
    from transformers import WhisperTokenizer

    stage = out_dir / ".tokenizer_stage"
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(stage / "tokenizer.json"),
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", model_max_length=1024,
    )
    tokenizer.save_pretrained(out_dir)
    for f in stage.iterdir():
        f.unlink()
    stage.rmdir()


def convert(ct2_dir: str | Path, out_dir: str | Path, model_bin: list[str | Path] | None = None,
            verbose: bool = True) -> dict:
    """Convert; returns a summary (dims, dtype conversions, special ids)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    parts = [Path(p) for p in model_bin] if model_bin else [ct2_dir / "model.bin"]
    model = read_ct2_model(parts)
    sd, dims, rd = ct2_to_state_dict(model)
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    unknown = set(ct2_config) - {"alignment_heads", "lang_ids", "suppress_ids", "suppress_ids_begin"}
    if unknown:
        raise ConversionError(f"CT2 config.json keys not understood: {sorted(unknown)}")
    tok, ids = _tokenizer_with_timestamps(ct2_dir, dims["vocab_size"])
    sp = _special_ids(ids, ct2_config, dims["vocab_size"])

    suppress = list(ct2_config.get("suppress_ids") or [])
    begin_suppress = list(ct2_config.get("suppress_ids_begin") or [])
    alignment = [list(map(int, p)) for p in ct2_config.get("alignment_heads") or []]
    for layer, head in alignment:
        if not (0 <= layer < dims["decoder_layers"] and 0 <= head < dims["decoder_attention_heads"]):
            raise ConversionError(f"alignment head {(layer, head)} outside the decoder")

    config = WhisperConfig(
        vocab_size=dims["vocab_size"], num_mel_bins=dims["num_mel_bins"], d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"], decoder_layers=dims["decoder_layers"],
        encoder_attention_heads=dims["encoder_attention_heads"],
        decoder_attention_heads=dims["decoder_attention_heads"],
        encoder_ffn_dim=dims["encoder_ffn_dim"], decoder_ffn_dim=dims["decoder_ffn_dim"],
        max_source_positions=dims["max_source_positions"], max_target_positions=dims["max_target_positions"],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=dims["tie_word_embeddings"],
        bos_token_id=sp["eot"], eos_token_id=sp["eot"], pad_token_id=sp["eot"],
        decoder_start_token_id=sp["sot"], suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        architectures=["WhisperForConditionalGeneration"],
    )
    if dims["d_model"] % dims["encoder_attention_heads"] or dims["d_model"] % dims["decoder_attention_heads"]:
        raise ConversionError(f"d_model {dims['d_model']} does not split into the heads")

    with torch.device("meta"):
        hf = WhisperForConditionalGeneration(config)
    expected = hf.state_dict()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        raise ConversionError(
            "state dict does not match WhisperForConditionalGeneration:\n"
            f"  never set: {missing}\n  not a parameter: {extra}\n"
            f"  wrong shape: {[(k, sd[k].shape, tuple(expected[k].shape)) for k in wrong]}"
        )
    tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
    hf.load_state_dict(tensors, strict=True, assign=True)
    if dims["tie_word_embeddings"]:
        hf.tie_weights()
    on_meta = [n for n, p in list(hf.named_parameters()) + list(hf.named_buffers()) if p.is_meta]
    if on_meta:
        raise ConversionError(f"left unset after loading: {on_meta}")
    hf.eval()

    gen = GenerationConfig(
        decoder_start_token_id=sp["sot"], bos_token_id=sp["eot"], eos_token_id=sp["eot"],
        pad_token_id=sp["eot"], max_length=dims["max_target_positions"],
        suppress_tokens=suppress, begin_suppress_tokens=begin_suppress,
        no_timestamps_token_id=sp["notimestamps"], prev_sot_token_id=sp["prev"],
        is_multilingual=sp["multilingual"], return_timestamps=False, max_initial_timestamp_index=50,
    )
    if alignment:
        gen.alignment_heads = alignment
    if sp["multilingual"]:
        gen.lang_to_id = sp["lang_to_id"]
        gen.task_to_id = {"transcribe": sp["transcribe"], "translate": sp["translate"]}
    hf.generation_config = gen

    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out_dir, safe_serialization=True)
    _write_tokenizer(out_dir, tok)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"], sampling_rate=16000, hop_length=160,
                            chunk_length=30, n_fft=400, padding_value=0.0).save_pretrained(out_dir)

    dtype_counts: dict[str, int] = {}
    for kind in rd.kinds.values():
        dtype_counts[kind] = dtype_counts.get(kind, 0) + 1
    summary = {
        "source": [str(p) for p in parts], "out": str(out_dir), "dims": dims,
        "ct2_variables": len(model.variables), "ct2_aliases": dict(model.aliases),
        "stored_tensors_to_float32": dtype_counts, "parameters": len(expected),
        "special_ids": {k: v for k, v in sp.items() if k != "lang_to_id"},
        "languages": len(sp["lang_to_id"]),
    }
    if verbose:
        print(json.dumps(summary, indent=2))
        dequant = {k: v for k, v in dtype_counts.items() if "dequantized" in k}
        print("dequantized to float32: " + (str(dequant) if dequant else "nothing (no int8/int16 weights)"))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ct2_dir", type=Path, help="CT2 Whisper folder (config.json, model.bin, tokenizer.json)")
    p.add_argument("out_dir", type=Path, help="folder to write the transformers model to")
    p.add_argument("--model-bin", nargs="+", type=Path,
                   help="model.bin, or its pieces in order (concatenated); default CT2_DIR/model.bin")
    args = p.parse_args(argv)
    try:
        convert(args.ct2_dir, args.out_dir, args.model_bin)
    except ConversionError as e:
        print(f"conversion refused: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
