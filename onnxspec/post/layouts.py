"""Folder layouts that other runtimes load unchanged: ``flat`` (onnxspec's own, Optimum's),
``transformers.js`` and ``genai`` (onnxruntime-genai).

A layout is data (:class:`Layout`: where the graphs go, which dtype variants sit beside them,
which config file is written) and :func:`write_layout` turns a flat export folder into it:

- ``transformers.js``: the graphs transformers.js loads go to ``onnx/``, each with its dtype
  variants beside it under transformers.js' suffixes (:data:`DTYPE_SUFFIX`: ``model.onnx``,
  ``model_fp16.onnx``, ``model_quantized.onnx``; for an encoder-decoder ``encoder_model*.onnx``
  and ``decoder_model_merged*.onnx``, the only decoder it loads); ``config.json``,
  ``generation_config.json`` and the tokenizer and preprocessor files stay at the top. A graph
  with its weights in an external file gets them in ``<file>_data`` and is named in
  ``config.json`` under ``transformers.js_config.use_external_data_format``, as transformers.js
  looks for them.
- ``genai``: the flat folder plus ``genai_config.json`` (onnxruntime-genai's decoder-only
  format) describing ``model.onnx``: its inputs, outputs and cache names (read from the graph
  and :mod:`onnxspec.pieces.cache_names`), its heads and head size (read from the cache
  inputs' shapes), the token ids and the search defaults (``config.json`` and
  ``generation_config.json``).

Variants: ``fp16`` is an fp16 export of the same model by onnxspec, validated against PyTorch
like any export (:func:`export_with_layout` runs it); ``q8`` (``_quantized``) and ``q4``
(``_q4``) are the fp32 graph quantized (int8 dynamic, int4 ``MatMulNBits``) by
:func:`onnxspec.post.quantize.quantize`, which judges them against the PyTorch model by
agreement (cosine, top-1, greedy decoding: :mod:`onnxspec.post.agreement`) and fails below its
thresholds; :func:`write_layout` on its own quantizes unjudged (onnxruntime must load the graph).
``onnxspec_layout.json`` records, for every graph file, what it is and how it was checked.

:func:`export_with_layout` exports (and validates) into a temporary folder beside the
destination, writes the layout there and swaps it into place (:mod:`onnxspec.pipeline.output`):
a failure leaves nothing half-written and the previous folder as it was. The reports it writes
name each graph where the layout put it (``path``: :func:`laid_out_paths`) beside its flat
``filename``, and list the laid-out folder's files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import onnx
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from onnxspec.build.graphs import external_data_files
from onnxspec.errors import ConfigError, UnknownNameError, UnsupportedTaskError, ValidationError
from onnxspec.judge.runtimes import transformers_js_files
from onnxspec.pieces.cache_names import Direction, Which, cache_name, parse

__all__ = [
    "DTYPE_SUFFIX",
    "GENAI_TYPES",
    "LAYOUTS",
    "Layout",
    "LayoutResult",
    "check_fits",
    "check_transformers_js_config",
    "export_with_layout",
    "genai_config",
    "genai_type",
    "get_layout",
    "laid_out_paths",
    "transformers_js_graphs",
    "write_layout",
]

DTYPE_SUFFIX: Mapping[str, str] = {
    "fp32": "",
    "fp16": "_fp16",
    "q8": "_quantized",
    "int8": "_int8",
    "uint8": "_uint8",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
"""transformers.js' ``dtype`` option -> the suffix of the graph file it loads
(``onnx/<name><suffix>.onnx``)."""

VARIANTS = ("fp16", "q8", "q4")
"""The variants onnxspec can write beside a fp32 graph: an fp16 export, int8 and int4 quantization."""

_QUANTIZE = {"q8": "int8-dynamic", "q4": "int4"}
"""Variant -> :func:`~onnxspec.post.quantize.quantize_file` method. transformers.js's ``q8`` files are
dynamically quantized int8 (``MatMulInteger``), which onnxruntime-web runs with integer kernels;
onnxspec's default int8 (8-bit ``MatMulNBits``) is left to the ``quantize`` command."""


@attrs.frozen(kw_only=True)
class Layout:
    """Where an export's files go for one runtime."""

    name: str
    graph_dir: str = ""
    """Subfolder of the graphs (``""``: beside ``config.json``)."""
    variants: tuple[str, ...] = ()
    """Dtype variants written beside each graph the runtime loads (keys of :data:`DTYPE_SUFFIX`)."""
    config_file: str | None = None
    """A runtime config file the layout writes at the top."""
    runtime: str = ""
    """The runtime that loads the folder as written (as :mod:`onnxspec.judge.runtimes` names it)."""


LAYOUTS: Mapping[str, Layout] = {
    "flat": Layout(name="flat", runtime="optimum"),
    "transformers.js": Layout(name="transformers.js", graph_dir="onnx", variants=("fp16", "q8"), runtime="transformers.js"),
    "genai": Layout(name="genai", config_file="genai_config.json", runtime="onnxruntime-genai"),
}
"""Every layout by name (the ``--layout`` choices)."""

GENAI_TYPES: Mapping[str, str] = {
    "ernie4_5": "ernie4_5",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3_text",
    "gpt2": "decoder",  # genai's own "gpt2" type reads a combined key/value cache
    "gpt_oss": "gptoss",
    "granite": "granite",
    "internlm2": "internlm2",
    "llama": "llama",
    "mistral": "mistral",
    "nemotron": "nemotron",
    "olmo": "olmo",
    "phi": "phi",
    "phi3": "phi3",
    "phimoe": "phimoe",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "smollm3": "smollm3",
}
"""transformers ``model_type`` -> onnxruntime-genai ``model.type``, for the decoder-only language
models whose cache is one key and one value tensor per layer (genai's LLM types; ``lfm2`` is
left out: its cache holds convolution states too; gpt2 gets genai's generic ``decoder`` type,
since its ``gpt2`` type runs a cache of one combined key/value tensor per layer)."""

TRANSFORMERS_JS_SEQ2SEQ_DECODERS = frozenset({
    "bart", "blenderbot", "blenderbot-small", "cohere_asr", "florence2_language", "lite-whisper", "longt5", "m2m_100",
    "marian", "mbart", "moonshine", "mt5", "musicgen_decoder", "speecht5", "t5", "trocr", "whisper",
})
"""Decoders whose cache transformers.js names like an encoder-decoder's
(``past_key_values.<i>.decoder.key``, ``...encoder.key``); in a vision-encoder-decoder any other
decoder gets decoder-only names (``past_key_values.<i>.key``), which onnxspec's merged decoder
does not have."""

REPORT = "onnxspec_report.json"
CONTRACT = "onnxspec_contract.json"
RECORD = "onnxspec_layout.json"
POST = "onnxspec_post.json"


def get_layout(name: str | Layout) -> Layout:
    """The layout called ``name`` (a :class:`Layout` is returned as it is)."""
    if isinstance(name, Layout):
        return name
    if name not in LAYOUTS:
        raise UnknownNameError("layout", name, LAYOUTS, f"Layouts: {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def genai_type(model_type: str) -> str:
    """onnxruntime-genai's ``model.type`` for a transformers ``model_type``; refuses others."""
    if model_type not in GENAI_TYPES:
        raise UnsupportedTaskError(
            f"--layout genai: onnxruntime-genai has no decoder type for {model_type!r} (it runs "
            f"{', '.join(sorted(GENAI_TYPES))}); export it with --layout flat or --layout transformers.js"
        )
    return GENAI_TYPES[model_type]


def check_transformers_js_config(config: Mapping[str, Any]) -> None:
    """Refuse a vision-encoder-decoder whose decoder transformers.js would feed a decoder-only
    cache (GPT-2 and the like: see :data:`TRANSFORMERS_JS_SEQ2SEQ_DECODERS`)."""
    decoder = (config.get("decoder") or {}).get("model_type")
    if config.get("model_type") == "vision-encoder-decoder" and decoder not in TRANSFORMERS_JS_SEQ2SEQ_DECODERS:
        raise UnsupportedTaskError(
            f"--layout transformers.js: for a vision-encoder-decoder with a {decoder!r} decoder transformers.js feeds a "
            "decoder-only cache (past_key_values.<i>.key), and onnxspec's decoder_model_merged.onnx takes an "
            "encoder-decoder cache (past_key_values.<i>.decoder.key, past_key_values.<i>.encoder.key); export it with "
            "--layout flat (Optimum's ORTModelForVision2Seq loads it)"
        )


def check_fits(layout: Layout, *, model_type: str | None, task: str | None, float_dtype: str = "fp32",
               monolith: bool = False, merged: bool | None = None, config: Mapping[str, Any] | None = None) -> None:
    """Refuse, before anything is exported, a layout the model or the options cannot give.

    ``model_type``, ``task`` and the model's ``config`` (``config.json`` as a dict) may be
    ``None`` when not known yet (the written folder is checked again by :func:`write_layout`)."""
    from onnxspec.pieces.tasks import parse_task

    if layout.name == "genai":
        if model_type is not None:
            genai_type(model_type)
        request = parse_task(task) if task is not None else None
        if request is None or request.name != "text-generation" or not request.with_past:
            raise UnsupportedTaskError(
                f"--layout genai describes a decoder-only model with a KV cache, not the task {task or 'inferred from config.json'!r}; "
                "pass --task text-generation-with-past"
            )
    if layout.name == "transformers.js":
        if float_dtype != "fp32" and "fp16" in layout.variants:
            raise UnsupportedTaskError(
                f"--layout transformers.js writes model.onnx in fp32 and model_fp16.onnx beside it; drop --dtype {float_dtype}"
            )
        if config:
            check_transformers_js_config(config)
        encoder_decoder = bool(config and (config.get("is_encoder_decoder") or config.get("model_type") == "vision-encoder-decoder"))
        if encoder_decoder and (task is None or not parse_task(task).with_past):
            raise UnsupportedTaskError(
                "--layout transformers.js loads an encoder-decoder as encoder_model.onnx + decoder_model_merged.onnx, which "
                f"a task with a cache writes; pass --task {(task or 'TASK').removesuffix('-with-past')}-with-past"
            )
        if monolith or merged is False:
            raise UnsupportedTaskError(
                "--layout transformers.js loads an encoder-decoder as encoder_model.onnx + decoder_model_merged.onnx; "
                "drop --monolith and --no-merged"
            )


# --------------------------------------------------------------------------------------------
# graph files


def _external_files(path: Path) -> list[str]:
    """The external data files a graph's tensors point to (subgraphs included)."""
    return list(external_data_files(onnx.load(os.fspath(path), load_external_data=False)))


def _put(src: Path, dst: Path, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dst)
    else:
        shutil.copy2(src, dst)


def _put_graph(src: Path, dst: Path, move: bool, data_name: str | None = None) -> bool:
    """Put the graph ``src`` and its external data at ``dst``; the data file becomes
    ``data_name`` (default: its name relative to ``dst``'s name as it was) and the graph's
    references follow. Returns whether the graph has external data."""
    locations = _external_files(src)
    if not locations:
        _put(src, dst, move)
        return False
    if len(locations) > 1 and data_name is not None:
        raise ConfigError(f"{src.name} keeps its weights in {len(locations)} files ({', '.join(locations)}); one is expected")
    new_name = data_name or locations[0].replace(src.name, dst.name, 1)
    _put(src.parent / locations[0], dst.parent / new_name, move)
    model = onnx.load(os.fspath(src), load_external_data=False)
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = new_name
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, os.fspath(dst))
    if move:
        src.unlink()
    return True


def _io(path: Path) -> tuple[dict[str, list[int | str]], dict[str, list[int | str]]]:
    """Inputs and outputs of a graph: name -> dims (an int, or the axis' symbol)."""
    graph = onnx.load(os.fspath(path), load_external_data=False).graph

    def dims(value: Any) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]

    return {v.name: dims(v) for v in graph.input}, {v.name: dims(v) for v in graph.output}


def transformers_js_graphs(folder: Path) -> tuple[str, ...]:
    """The graphs (names without ``.onnx``) transformers.js loads from an export folder: ``model``
    for a single-graph export, ``encoder_model`` and ``decoder_model_merged`` for an
    encoder-decoder (its ``decoder_model`` and ``decoder_with_past_model`` are not loaded)."""
    folder = Path(folder)
    graphs = sorted(p.stem for p in folder.glob("*.onnx"))
    loaded = transformers_js_files([f"{g}.onnx" for g in graphs])  # the rule the runtimes table offers transformers.js by
    if loaded is not None:
        return tuple(name.removesuffix(".onnx") for name in loaded)
    raise UnsupportedTaskError(
        f"transformers.js loads model.onnx alone or encoder_model.onnx + decoder_model_merged.onnx, and the export holds "
        f"{', '.join(g + '.onnx' for g in graphs) or 'no graph'}; export an encoder-decoder with a -with-past task "
        "(without --no-merged or --monolith)"
    )


# --------------------------------------------------------------------------------------------
# genai_config.json


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def _pattern(which: Which, direction: Direction) -> str:
    """genai's ``%d`` pattern of a cache name (``past_key_values.%d.key``), from the naming scheme."""
    name = cache_name(0, which, direction=direction)
    head, _, tail = name.partition(".0.")
    return f"{head}.%d.{tail}"


def genai_config(folder: Path, filename: str = "model.onnx") -> dict[str, Any]:
    """onnxruntime-genai's ``genai_config.json`` for the decoder-only graph ``folder/filename``.

    Names, layers, key/value heads and head size come from the graph; hidden size, query
    heads, vocabulary, context length and token ids from ``config.json``; the search defaults
    from ``generation_config.json`` when the folder has one. Raises
    :class:`UnsupportedTaskError` for a graph genai cannot drive (no cache inputs, a cache that
    is not one key and one value per layer of shape ``[batch, heads, length, head_size]``) or
    a model type genai has no type for.
    """
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    generation = _read_json(folder / "generation_config.json")
    kind = genai_type(str(config.get("model_type")))
    inputs, outputs = _io(folder / filename)
    keys = {p.layer: n for n in inputs if (p := parse(n)) and p.part is None and p.which is Which.KEY}
    values = {p.layer: n for n in inputs if (p := parse(n)) and p.part is None and p.which is Which.VALUE}
    layers = len(keys)
    expected = {_pattern(w, d) % i for i in range(layers) for w in Which for d in Direction}
    cache = {n for n in (*inputs, *outputs) if parse(n) is not None}
    if not layers or "input_ids" not in inputs or "logits" not in outputs or cache != expected or len(values) != layers:
        raise UnsupportedTaskError(
            f"--layout genai needs a decoder-only graph with a KV cache (input_ids and past_key_values.<i>.key|value in, "
            f"logits and present.<i>.key|value out); {filename} has inputs {', '.join(inputs)}; "
            "export with --task text-generation-with-past"
        )
    shape = inputs[keys[0]]
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1::2]):
        raise UnsupportedTaskError(
            f"--layout genai: {keys[0]} has shape {shape}; onnxruntime-genai allocates the cache as "
            "[batch, key/value heads, length, head size] with fixed heads and head size"
        )
    kv_heads, head_size = int(shape[1]), int(shape[3])
    heads = _first(config, "num_attention_heads", "n_head")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    vocab = outputs["logits"][-1] if isinstance(outputs["logits"][-1], int) else config.get("vocab_size")
    context = _first(config, "max_position_embeddings", "n_positions", "seq_length")
    missing = [k for k, v in (("num_attention_heads", heads), ("hidden_size", hidden), ("vocab_size", vocab),
                              ("max_position_embeddings", context)) if v is None]
    tokens = {k: _first(generation, k) if _first(generation, k) is not None else config.get(k)
              for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    if tokens["eos_token_id"] is None:
        missing.append("eos_token_id")
    if missing:
        raise ConfigError(f"--layout genai: config.json has no {', '.join(missing)}; set it there and export again")
    if tokens["pad_token_id"] is None:  # genai pads finished sequences of a batch with it
        eos = tokens["eos_token_id"]
        tokens["pad_token_id"] = eos[0] if isinstance(eos, list) else eos
    if tokens["bos_token_id"] is None:
        tokens["bos_token_id"] = tokens["pad_token_id"]
    names_in = {k: k for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    decoder = {
        "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
        "filename": filename,
        "head_size": head_size,
        "hidden_size": int(hidden),
        "inputs": {
            **names_in,
            "past_key_names": _pattern(Which.KEY, Direction.INPUTS),
            "past_value_names": _pattern(Which.VALUE, Direction.INPUTS),
        },
        "outputs": {
            "logits": "logits",
            "present_key_names": _pattern(Which.KEY, Direction.OUTPUTS),
            "present_value_names": _pattern(Which.VALUE, Direction.OUTPUTS),
        },
        "num_attention_heads": int(heads),
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
    }

    def search(key: str, default: Any) -> Any:
        value = _first(generation, key)
        return default if value is None else value

    return {
        "model": {
            **tokens,
            "context_length": int(context),
            "decoder": decoder,
            "type": kind,
            "vocab_size": int(vocab),
        },
        "search": {
            "diversity_penalty": search("diversity_penalty", 0.0),
            "do_sample": search("do_sample", False),
            "early_stopping": True,
            "length_penalty": search("length_penalty", 1.0),
            "max_length": int(context),
            "min_length": 0,
            "no_repeat_ngram_size": search("no_repeat_ngram_size", 0),
            "num_beams": search("num_beams", 1),
            "num_return_sequences": search("num_return_sequences", 1),
            "past_present_share_buffer": False,  # onnxspec's graphs concatenate: present is past + the new positions
            "repetition_penalty": search("repetition_penalty", 1.0),
            "temperature": search("temperature", 1.0),
            "top_k": search("top_k", 50),
            "top_p": search("top_p", 1.0),
        },
    }


# --------------------------------------------------------------------------------------------
# writing a layout


def write_layout(
    flat: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    layout: str | Layout,
    *,
    fp16: str | os.PathLike[str] | None = None,
    variants: Sequence[str] | None = None,
    judged: Mapping[str, str | os.PathLike[str]] | None = None,
    move: bool = False,
) -> dict[str, str]:
    """Write the flat export folder ``flat`` to the new folder ``dst`` in ``layout``.

    ``variants`` (default: the layout's) are written beside each graph the runtime loads:
    ``fp16`` takes the same graph from ``fp16``, the flat folder of an fp16 export of the
    same model; ``q8`` / ``q4`` take it from ``judged[variant]``, the folder
    :func:`onnxspec.post.quantize.quantize` wrote (quantized and judged against PyTorch),
    else quantize the fp32 graph here (not judged). ``move`` moves the files out of
    ``flat`` (a temporary folder) instead of copying them. Returns every graph file written
    (relative to ``dst``) -> what it is and how it was checked, also written to
    ``onnxspec_layout.json``.
    """
    layout = get_layout(layout)
    flat, dst = Path(flat), Path(dst)
    variants = tuple(layout.variants if variants is None else variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UnknownNameError("variant", unknown[0], VARIANTS, f"onnxspec writes the variants {', '.join(VARIANTS)}.")
    if "fp16" in variants and fp16 is None:
        raise ConfigError("the fp16 variant needs the folder of an fp16 export of the same model (fp16=...)")
    dst.mkdir(parents=True, exist_ok=True)
    record: dict[str, str] = {}
    if layout.name == "genai":
        config = genai_config(flat)
        for path in sorted(flat.iterdir()):
            _put(path, dst / path.name, move)
        (dst / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n")
        record["model.onnx"] = f"exported and validated against PyTorch ({REPORT}); described by genai_config.json"
    elif layout.name == "transformers.js":
        record = _write_transformers_js(flat, dst, layout, None if fp16 is None else Path(fp16), variants,
                                        {k: Path(v) for k, v in (judged or {}).items()}, move)
    else:
        for path in sorted(flat.iterdir()):
            _put(path, dst / path.name, move)
        record = {p.name: f"exported and validated against PyTorch ({REPORT})" for p in sorted(dst.glob("*.onnx"))}
    (dst / RECORD).write_text(json.dumps({"layout": layout.name, "runtime": layout.runtime, "graphs": record}, indent=2) + "\n")
    return record


def laid_out_paths(flat: str | os.PathLike[str], layout: str | Layout, variant: str = "fp32") -> dict[str, str]:
    """Where ``layout`` puts each graph of the flat export folder ``flat``: its file name -> its
    path relative to the laid-out folder (``model.onnx`` -> ``onnx/model.onnx``; with
    ``variant="fp16"``, the graphs of the fp16 export: ``onnx/model_fp16.onnx``). A graph the
    layout leaves out (transformers.js' two decoders beside the merged one) maps to ``""``."""
    layout, flat = get_layout(layout), Path(flat)
    graphs = sorted(p.name for p in flat.glob("*.onnx"))
    if layout.name != "transformers.js":
        return {g: g for g in graphs}
    loaded = transformers_js_graphs(flat)
    prefix = f"{layout.graph_dir}/" if layout.graph_dir else ""
    return {g: f"{prefix}{g[: -len('.onnx')]}{DTYPE_SUFFIX[variant]}.onnx" if g[: -len(".onnx")] in loaded else "" for g in graphs}


def _write_transformers_js(flat: Path, dst: Path, layout: Layout, fp16: Path | None, variants: tuple[str, ...],
                           judged: Mapping[str, Path], move: bool) -> dict[str, str]:
    from onnxspec.post.quantize import quantize_file

    loaded = transformers_js_graphs(flat)
    check_transformers_js_config(_read_json(flat / "config.json"))
    if fp16 is not None and "fp16" in variants:
        absent = [f"{g}.onnx" for g in loaded if not (fp16 / f"{g}.onnx").is_file()]
        if absent:
            raise ConfigError(f"the fp16 export {os.fspath(fp16)!r} has no {', '.join(absent)}")
    record: dict[str, str] = {}
    external: dict[str, int] = {}
    paths = {variant: laid_out_paths(flat, layout, variant) for variant in ("fp32", *variants)}

    for graph in loaded:
        file = f"{graph}.onnx"
        main = dst / paths["fp32"][file]
        if _put_graph(flat / file, main, move, data_name=f"{main.name}_data"):
            external[main.name] = 1
        record[paths["fp32"][file]] = f"exported and validated against PyTorch ({REPORT})"
        for variant in variants:
            target = dst / paths[variant][file]
            name = target.name
            if variant == "fp16":
                assert fp16 is not None
                if _put_graph(fp16 / file, target, move, data_name=f"{name}_data"):
                    external[name] = 1
                record[paths[variant][file]] = f"exported in fp16 and validated against PyTorch ({_renamed(REPORT, 'fp16')})"
            elif variant in judged:
                if _put_graph(judged[variant] / file, target, move, data_name=f"{name}_data"):
                    external[name] = 1
                record[paths[variant][file]] = (f"{_QUANTIZE[variant]} quantization of {paths['fp32'][file]} (onnxspec.post.quantize), "
                                                f"judged against PyTorch by agreement ({_renamed(POST, variant)})")
            else:
                method = _QUANTIZE[variant]
                quantize_file(main, target, method=method)
                if target.with_name(f"{name}.data").exists():
                    _put_graph(target, target.with_name(f"{name}.tmp"), True, data_name=f"{name}_data")
                    os.replace(target.with_name(f"{name}.tmp"), target)
                    external[name] = 1
                _session_loads(target)
                record[paths[variant][file]] = (f"{method} quantization of {paths['fp32'][file]} (onnxspec.post.quantize); loaded by "
                                                "onnxruntime, not validated against PyTorch")
    for path in sorted(flat.iterdir()):
        if path.suffix == ".onnx" or not path.is_file() or _is_data_of_graph(path, flat):
            continue
        _put(path, dst / path.name, move)
    if fp16 is not None and "fp16" in variants:
        for name in (REPORT, CONTRACT):
            if (fp16 / name).is_file():
                _put(fp16 / name, dst / _renamed(name, "fp16"), move)
    for variant, folder in judged.items():
        if variant in variants and (folder / POST).is_file():
            _put(folder / POST, dst / _renamed(POST, variant), move)
    if external:
        config_path = dst / "config.json"
        config = _read_json(config_path)
        tjs = dict(config.get("transformers.js_config") or {})
        tjs["use_external_data_format"] = {**(tjs.get("use_external_data_format") or {}), **external}
        config["transformers.js_config"] = tjs
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return record


def _renamed(name: str, variant: str) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}_{variant}{ext}"


def _is_data_of_graph(path: Path, folder: Path) -> bool:
    """Whether ``path`` is the external data file of a graph of ``folder``."""
    return any(path.name.startswith(g.name) for g in folder.glob("*.onnx"))


def _session_loads(path: Path) -> None:
    """Check that onnxruntime's CPU provider opens the graph (a quantized graph it cannot run is an error)."""
    import onnxruntime

    try:
        onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ConfigError(f"onnxruntime cannot load the quantized graph {path.name}: {e}") from e


# --------------------------------------------------------------------------------------------
# export, then lay out


@attrs.frozen(kw_only=True)
class LayoutResult:
    """An export written in a layout: the reports of the exports it ran (``main``, ``fp16``),
    the graph files with what each is and how it was checked, every file of the folder, and
    the reports of the quantized variants."""

    layout: Layout
    output_dir: str
    reports: Mapping[str, Any] = attrs.field(converter=dict, hash=False)
    graphs: Mapping[str, str] = attrs.field(converter=dict, hash=False)
    files: tuple[str, ...] = ()
    posts: Mapping[str, Any] = attrs.field(factory=dict, converter=dict, hash=False)
    """Variant -> the report of its quantization, judged against PyTorch (``onnxspec_post_<variant>.json``)."""

    @property
    def report(self) -> Any:
        """The report of the main (fp32, or the ``--dtype`` asked for) export."""
        return self.reports["main"]


def export_with_layout(
    model_or_folder: Any,
    output_dir: str | os.PathLike[str],
    layout: str | Layout = "flat",
    *,
    variants: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[str, str], None] | None = None,
    **export_options: Any,
) -> LayoutResult:
    """Export ``model_or_folder`` with :func:`onnxspec.export` (``export_options`` are its keyword
    arguments), then write it to ``output_dir`` in ``layout``.

    The fp16 variant is a second export with ``float_dtype=fp16``, validated like the first.
    Everything is built in a temporary folder beside ``output_dir`` and swapped in at the end;
    a graph that fails validation leaves its files in ``<output_dir>.onnxspec-failed``.
    """
    from onnxspec.pieces.shapes import DTypes, FloatDtype
    from onnxspec.pipeline.core import export
    from onnxspec.post.quantize import quantize
    from onnxspec.pipeline.output import check_output_dir, keep_failed, make_workdir, move_into_place, recover_stale, remove_created

    layout = get_layout(layout)
    output_dir = os.fspath(output_dir)
    if variants is not None:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise UnknownNameError("variant", unknown[0], VARIANTS, f"--variants takes {', '.join(VARIANTS)}, comma-separated.")
        if variants and not layout.variants:
            raise UnsupportedTaskError(f"--variants is for --layout transformers.js; --layout {layout.name} writes no variants")
    variants = tuple(layout.variants if variants is None else variants)
    dtypes = export_options.pop("dtypes", None) or DTypes()
    if isinstance(model_or_folder, (str, os.PathLike)):
        folder_config = _read_json(Path(model_or_folder) / "config.json")
    else:
        module_config = getattr(model_or_folder, "config", None)
        folder_config = module_config.to_dict() if hasattr(module_config, "to_dict") else {}
    model_type = folder_config.get("model_type")
    check_fits(layout, model_type=model_type, task=export_options.get("task"), float_dtype=dtypes.float_dtype.value,
               monolith=export_options.get("monolith", False), merged=export_options.get("merged"), config=folder_config)
    if layout.name == "flat":
        report = export(model_or_folder, output_dir, overwrite=overwrite, dtypes=dtypes, progress=progress, **export_options)
        graphs = {name: f"exported and validated against PyTorch ({REPORT})" for name in report.files if name.endswith(".onnx")}
        return LayoutResult(layout=layout, output_dir=output_dir, reports={"main": report}, graphs=graphs, files=report.files)

    recover_stale(output_dir)
    check_output_dir(output_dir, overwrite)
    staging, created = make_workdir(output_dir)
    name = os.path.basename(os.path.abspath(output_dir))
    try:
        # each export sits in a folder named like the destination, so what its report says about
        # where it is reads right once the temporary parent is replaced by the destination's
        runs = {"main": (dtypes, staging)}
        if "fp16" in variants:
            runs["fp16"] = (attrs.evolve(dtypes, float_dtype=FloatDtype.FP16), os.path.join(staging, "fp16"))
        reports: dict[str, Any] = {}
        for run, (run_dtypes, parent) in runs.items():
            step = progress if progress is None or run == "main" else _prefixed(progress, run)
            folder = os.path.join(parent, name)
            try:
                reports[run] = export(model_or_folder, folder, dtypes=run_dtypes, progress=step, **export_options)
            except ValidationError as e:
                if not os.path.isdir(folder + ".onnxspec-failed"):
                    raise
                kept = keep_failed(folder + ".onnxspec-failed", output_dir)
                message = str(e).replace(repr(folder + ".onnxspec-failed"), repr(kept)).replace(repr(folder), repr(output_dir))
                prefix = f"--layout {layout.name}, the {run} export: " if run != "main" else ""
                raise ValidationError(prefix + message, e.report) from e
        judged: dict[str, str] = {}
        posts: dict[str, Any] = {}
        if layout.name == "transformers.js" and isinstance(model_or_folder, (str, os.PathLike)):
            source = os.path.join(staging, name)
            if any(v in _QUANTIZE for v in variants):  # quantize (and judge) only the graphs transformers.js loads
                source = os.path.join(staging, "loaded", name)
                _loaded_only(Path(staging) / name, Path(source), [f"{g}.onnx" for g in transformers_js_graphs(Path(staging) / name)])
            for variant in (v for v in variants if v in _QUANTIZE):
                if progress is not None:
                    progress("quantize", f"{_QUANTIZE[variant]}, judged")
                folder = os.path.join(staging, variant, name)
                try:
                    posts[variant] = quantize(source, folder, method=_QUANTIZE[variant], model=model_or_folder)
                except ValidationError as e:
                    kept = keep_failed(folder + ".onnxspec-failed", output_dir) if os.path.isdir(folder + ".onnxspec-failed") else None
                    why = str(e).split("\nNothing was written")[0]
                    raise ValidationError(
                        f"--layout {layout.name}, variant {variant}: {why}\nNothing was written to {output_dir!r}"
                        + (f"; the quantized graphs and {POST} are in {kept!r}" if kept else "")
                        + f"; to leave the variant out pass variants={tuple(v for v in variants if v != variant)!r} "
                        + f"(--variants {','.join(v for v in variants if v != variant) or repr('')})"
                    ) from e
                judged[variant] = folder
        if progress is not None:
            progress("layout", layout.name)
        built = os.path.join(staging, "layout")
        paths = {run: laid_out_paths(os.path.join(parent, name), layout, "fp32" if run == "main" else run) for run, (_, parent) in runs.items()}
        graphs = write_layout(os.path.join(staging, name), built, layout,
                              fp16=os.path.join(staging, "fp16", name) if "fp16" in runs else None, variants=variants,
                              judged=judged, move=True)
        destination = os.path.dirname(os.path.abspath(output_dir))
        files = tuple(sorted(p.relative_to(built).as_posix() for p in Path(built).rglob("*") if p.is_file()))
        reports = {run: _relocated(reports[run], runs[run][1], destination, output_dir, layout, paths[run], files) for run in reports}
        for run in reversed(list(reports)):  # the main report last: the folder's size it states is final
            reports[run] = _rewrite_report(Path(built), REPORT if run == "main" else _renamed(REPORT, run), reports[run])
        posts = {v: _rewrite_post(Path(built) / _renamed(POST, v), post, output_dir) for v, post in posts.items()}
        move_into_place(built, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        remove_created(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return LayoutResult(layout=layout, output_dir=output_dir, reports=reports, graphs=graphs, files=files, posts=posts)


def _loaded_only(flat: Path, dst: Path, graphs: Sequence[str]) -> None:
    """A copy of the export folder ``flat`` with only ``graphs`` (hard links where the file system
    allows), its report listing only them: what :func:`onnxspec.post.quantize.quantize` reads."""
    dst.mkdir(parents=True)
    others = [p.name for p in flat.glob("*.onnx") if p.name not in graphs]
    for path in sorted(flat.iterdir()):
        if not path.is_file() or any(path.name.startswith(o) for o in others) or path.name == REPORT:
            continue
        try:
            os.link(path, dst / path.name)
        except OSError:
            shutil.copy2(path, dst / path.name)
    report = _read_json(flat / REPORT)
    report["graphs"] = [g for g in report.get("graphs", ()) if g.get("filename") in graphs]
    (dst / REPORT).write_text(json.dumps(report, indent=2))


def _rewrite_post(path: Path, post: Any, output_dir: str) -> Any:
    """A quantization report as laid out: its graphs are in ``output_dir`` (under the variant's
    names), next to the export they were made from."""
    from onnxspec.post.folder import post_json

    where = os.path.abspath(output_dir)
    post = attrs.evolve(post, source_dir=where, output_dir=where)
    if path.is_file():
        path.write_text(post_json(post))
    return post


def _relocated(report: Any, parent: str, destination: str, output_dir: str, layout: Layout,
               paths: Mapping[str, str], files: tuple[str, ...]) -> Any:
    """``report`` of an export written in ``parent``, now part of ``output_dir`` in ``layout``:
    its folder; where each graph is now (``paths``: flat file name -> path in the laid-out
    folder, ``""`` when left out; the flat name stays the graph's ``filename``); the files of
    the laid-out folder (``files``); and the ways to run it (when the report lists them) for
    the laid-out folder: the layout's runtime needs nothing more; a layout that moved the graphs
    keeps only it."""
    changes: dict[str, Any] = {"output_dir": output_dir, "files": files}
    changes["graphs"] = tuple(attrs.evolve(g, path=paths.get(g.filename, "")) for g in report.graphs)
    runtimes = getattr(report, "runtimes", None)
    if runtimes:
        kept = []
        for runtime in runtimes:
            texts = {f.name: getattr(runtime, f.name).replace(parent, destination) for f in attrs.fields(type(runtime))
                     if isinstance(getattr(runtime, f.name), str)}
            runtime = attrs.evolve(runtime, **texts)
            if runtime.name == layout.runtime:
                kept.append(attrs.evolve(runtime, needs=""))
            elif not layout.graph_dir:
                kept.append(runtime)
        changes["runtimes"] = tuple(kept)
    return attrs.evolve(report, **changes)


def _rewrite_report(folder: Path, name: str, report: Any) -> Any:
    """Write ``report`` over the export's ``folder/name`` (its folder and runtimes as laid out,
    and, when the report states it, the size of the whole laid-out folder); return it."""
    from onnxspec.judge.report import report_json

    path = folder / name
    if not path.is_file():
        return report
    for _ in range(5):
        path.write_text(report_json(report))
        if not hasattr(report, "total_bytes"):
            return report
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        if report.total_bytes == size:
            return report
        report = attrs.evolve(report, total_bytes=size)
    return report


def _prefixed(progress: Callable[[str, str], None], run: str) -> Callable[[str, str], None]:
    return lambda stage, detail: progress(stage, f"{run} {detail}".strip())

