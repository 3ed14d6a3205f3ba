"""Loading models and their configs from local folders, or Hub IDs resolved to one.

A model argument that is no local path but a Hub ID (``org/name``) is first resolved to its
snapshot folder in the Hugging Face cache, downloaded or found there
(:func:`onnxspec.pipeline.hub.model_folder`); a local folder of the same name always wins.

A model folder holds a transformers checkpoint (``config.json`` and weights), or a GGUF file
(llama.cpp's format; transformers reads it with the ``gguf`` and ``accelerate`` packages).
:func:`read_source` decides which one an export reads and returns its config as a
:class:`ModelSource`; :func:`load_source_model` loads the model of a task's head from it
(:func:`load_model` does both).

Which file is read:

- a folder with ``config.json`` is a transformers checkpoint, unless ``gguf_file`` names a GGUF
  file in it;
- a folder with no ``config.json`` and exactly one ``*.gguf`` file reads that file; with several,
  ``gguf_file`` must say which.

A GGUF model is loaded with every weight dequantized to float32 (``GgufConfig(dequantize=True)``),
so it is a plain model that traces like any other, and transformers drops its quantized marks
(``hf_quantizer``, ``config.quantization_config``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
import torch

from onnxspec.build.pages import release_heap
from onnxspec.build.streamed import WeightSource, hollow_parameters, load_on_call, params_on_meta
from onnxspec.errors import ModelLoadError, UnsupportedTaskError, close_matches
from onnxspec.pipeline.gguf_read import compact_gguf_reader
from onnxspec.pipeline.gguf_stream import load_streamed
from onnxspec.pipeline.hub import model_folder
from onnxspec.pieces.tasks import head_classes, read_config_json

__all__ = [
    "GGUF_INSTALL",
    "GGUF_PACKAGES",
    "ModelSource",
    "choose_gguf_file",
    "config_from_json",
    "default_task",
    "exported_config_json",
    "gguf_files",
    "load_hollow_model",
    "load_model",
    "load_source_model",
    "load_vocoder",
    "read_source",
    "require_gguf_support",
    "require_head_packages",
    "save_gguf_tokenizer",
]

GGUF_PACKAGES = ("gguf", "accelerate")
"""The packages transformers needs to read a GGUF file (the ``gguf`` extra of onnxspec)."""

GGUF_INSTALL = "pip install 'onnxspec[gguf]' (or: pip install gguf accelerate)"

_GGUF_SUFFIX = ".gguf"


def _read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@attrs.frozen(kw_only=True)
class ModelSource:
    """A local model folder, the file its model is read from and its config (as a mapping).

    ``gguf_file`` is the name of the GGUF file read, or ``None`` for a transformers checkpoint
    (``config.json`` and weights).
    """

    folder: str
    config_json: Mapping[str, Any] = attrs.field(converter=_read_only, hash=False)
    gguf_file: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def path(self) -> str:
        """The file the model is read from (the GGUF file), or the folder."""
        return os.path.join(self.folder, self.gguf_file) if self.gguf_file is not None else self.folder


def gguf_files(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    """Names of the ``*.gguf`` files directly in ``folder``, sorted (none if it is no folder)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return ()
    return tuple(
        sorted(n for n in os.listdir(folder) if n.lower().endswith(_GGUF_SUFFIX) and os.path.isfile(os.path.join(folder, n)))
    )


def choose_gguf_file(folder: str | os.PathLike[str], gguf_file: str | None = None) -> str | None:
    """The GGUF file of ``folder`` to read, or ``None`` to read its transformers checkpoint.

    A named file must exist (the error lists the GGUF files there, with close matches). With no
    name: ``None`` when the folder has ``config.json`` (it wins), its only ``*.gguf`` file when
    it has one, an error listing them when it has several.
    """
    folder = os.fspath(folder)
    found = gguf_files(folder)
    if gguf_file is not None:
        if os.path.isfile(os.path.join(folder, gguf_file)):
            return gguf_file
        if not os.path.isdir(folder):
            raise ModelLoadError(f"model folder {folder!r} does not exist (or is not a folder); pass the folder holding {gguf_file!r}")
        held = f"its GGUF files are {', '.join(repr(n) for n in found)}" if found else "it holds no .gguf file"
        hint = close_matches(gguf_file, found)
        raise ModelLoadError(
            f"GGUF file {gguf_file!r} is not in {folder!r}: {held}."
            + (f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else "")
            + (" Pass one of these names as gguf_file (--gguf-file NAME)" if found else " Point --model at the folder that holds it")
        )
    if os.path.isfile(os.path.join(folder, "config.json")) or not found:
        return None
    if len(found) > 1:
        raise ModelLoadError(
            f"{folder!r} holds {len(found)} GGUF files and no config.json: {', '.join(repr(n) for n in found)}; "
            f"say which one to export: pass gguf_file=NAME (--gguf-file NAME), e.g. --gguf-file {found[0]}"
        )
    return found[0]


def require_gguf_support(what: str) -> None:
    """Refuse to read a GGUF file when a package transformers needs for it is not installed.

    Checked with ``importlib.util.find_spec`` (nothing is imported), before transformers fails
    with its own traceback.
    """
    missing = [name for name in GGUF_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"reading the GGUF file {what!r} needs the {' and '.join(repr(m) for m in missing)} "
            f"package{'s' if len(missing) > 1 else ''}, not installed here; install {GGUF_INSTALL}"
        )


def _refuse_remote_code(folder: str, config_json: Mapping[str, Any], trust_remote_code: bool) -> None:
    if config_json.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"model folder {folder!r} needs custom code (its config.json has 'auto_map': "
            f"{sorted(config_json['auto_map'])}); onnxspec does not run it unless asked: pass trust_remote_code=True "
            "(--trust-remote-code) if you trust that code"
        )


def _gguf_config(folder: str, gguf_file: str) -> Any:
    """The transformers config read from a GGUF file's metadata."""
    import transformers

    require_gguf_support(os.path.join(folder, gguf_file))
    try:
        with compact_gguf_reader():  # transformers' GGUFReader makes an object per vocabulary entry (0.7 GiB for 262k)
            return transformers.AutoConfig.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    except Exception as e:  # a truncated file, an architecture transformers cannot read from GGUF
        raise ModelLoadError(
            f"cannot read the config of the GGUF file {os.path.join(folder, gguf_file)!r}: {type(e).__name__}: {e}. "
            "Check that the file is complete, and that transformers reads its architecture from GGUF "
            "(llama, mistral, qwen2, qwen3, phi3, gemma, gpt2, ...)"
        ) from e


def read_source(
    folder: str | os.PathLike[str], gguf_file: str | None = None, *, trust_remote_code: bool = False
) -> ModelSource:
    """What an export of ``folder`` reads (see :func:`choose_gguf_file`) and its config.

    ``folder`` may be a Hub ID (``org/name``): it is resolved to its snapshot folder (see
    :mod:`onnxspec.pipeline.hub`), which is the ``folder`` of the source returned.
    A transformers checkpoint's config is its ``config.json`` (one that needs custom code is
    refused unless ``trust_remote_code``); a GGUF file's is the config transformers reads from
    its metadata.
    """
    folder = model_folder(folder, gguf_file=gguf_file)
    chosen = choose_gguf_file(folder, gguf_file)
    if chosen is None:
        config_json = read_config_json(folder)
        _refuse_remote_code(folder, config_json, trust_remote_code)
        return ModelSource(folder=folder, config_json=config_json)
    return ModelSource(folder=folder, config_json=_gguf_config(folder, chosen).to_dict(), gguf_file=chosen)


def config_from_json(config_json: Mapping[str, Any]) -> Any:
    """The transformers config of a parsed ``config.json`` (its ``auto_map`` left out: no code runs)."""
    import transformers

    return transformers.AutoConfig.for_model(**{k: v for k, v in config_json.items() if k != "auto_map"})


def default_task(source: ModelSource) -> str:
    """The task a folder's model is exported for when its config names no head (``architectures``).

    A GGUF file holds a language model (llama.cpp runs nothing else), so its model generates
    text: ``text2text-generation`` for an encoder-decoder, else ``text-generation``. A
    transformers checkpoint without ``architectures`` is a bare model: ``feature-extraction``.
    """
    if not source.is_gguf:
        return "feature-extraction"
    return "text2text-generation" if source.config_json.get("is_encoder_decoder") else "text-generation"


def load_model(
    folder: str | os.PathLike[str], task: str, *, trust_remote_code: bool = False, gguf_file: str | None = None
) -> torch.nn.Module:
    """Load the model of ``task``'s head from a local folder, in eval mode; never fetches, never
    runs remote code unless ``trust_remote_code``.

    The folder's transformers checkpoint is read, or its GGUF file (``gguf_file``, or its only
    one when it has no ``config.json``); see :func:`load_source_model`.
    """
    source = read_source(folder, gguf_file, trust_remote_code=trust_remote_code)
    return load_source_model(source, task, trust_remote_code=trust_remote_code)


HEAD_PACKAGES: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType(
    {
        # its Hungarian matcher (training loss only) is built with the model, and imports scipy
        "MaskFormerForInstanceSegmentation": (("scipy",), "pip install 'onnxspec[segmentation]' (or: pip install scipy)"),
    }
)
"""Heads that cannot even be built without a package: class name -> (packages, how to install them)."""


def require_head_packages(class_name: str) -> None:
    """Refuse to build a head whose construction imports a package that is not installed
    (checked with ``importlib.util.find_spec``: nothing is imported), saying how to install it."""
    packages, install = HEAD_PACKAGES.get(class_name, ((), ""))
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelLoadError(
            f"{class_name} needs the {' and '.join(repr(m) for m in missing)} package{'s' if len(missing) > 1 else ''} "
            f"to be built, and it is not installed here; install it: {install}"
        )


def _loads(head: Any, config: Any) -> bool:
    """Whether a transformers class loads a model of ``config``: an auto class maps its config
    class, a named model class (:data:`~onnxspec.pieces.tasks.NAMED_HEADS`) declares it."""
    mapping = getattr(head, "_model_mapping", None)
    return type(config) in mapping if mapping is not None else isinstance(config, getattr(head, "config_class", ()) or ())


def load_source_model(source: ModelSource, task: str, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """Load the model of ``task``'s head from what :func:`read_source` found, in eval mode.

    The head is the first class of :func:`~onnxspec.pieces.tasks.head_classes` that loads the
    config: one of the task's auto classes, else the class ``NAMED_HEADS`` names for its model
    type (PatchTST's forecaster, in no auto class).

    A GGUF model is built from the config already read (reading a GGUF file's metadata again
    costs seconds: 9 s for SmolLM2-135M's 49k-token vocabulary), with every weight dequantized
    to float32: the model returned is a plain, unquantized one.
    """
    import transformers

    folder = source.folder
    if source.gguf_file is None:
        _refuse_remote_code(folder, source.config_json, trust_remote_code)
        try:
            config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as e:
            raise ModelLoadError(f"cannot read the config of {folder!r}: {e}") from e
        options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        what, fix = repr(folder), "Check that the weights file is present and complete (save the model again with save_pretrained)"
        if gguf_files(folder):  # a repo's config.json beside its GGUF files, with no weights of its own
            fix += f", or export one of its GGUF files with --gguf-file NAME ({', '.join(gguf_files(folder))})"
    else:
        require_gguf_support(source.path)
        config = config_from_json(source.config_json)
        options = {"gguf_file": source.gguf_file, "dtype": torch.float32}
        if hasattr(transformers, "GgufConfig"):  # keep no weight packed, even where a GGUF matmul kernel exists
            options["quantization_config"] = transformers.GgufConfig(dequantize=True)
        what, fix = repr(source.path), "Check that the GGUF file is complete and that transformers can read its tensors"
    errors: list[str] = []
    for name in head_classes(task, getattr(config, "model_type", "")):  # auto classes, then a head none of them maps
        auto = getattr(transformers, name)
        if not _loads(auto, config) and not trust_remote_code:
            errors.append(f"{name} has no model for {type(config).__name__}")
            continue
        require_head_packages(name)
        try:
            # a GGUF file's tensors dequantized one at a time into a memory-mapped checkpoint, where transformers' own
            # loading holds them all twice (onnxspec.pipeline.gguf_stream); its loading for the architectures that need it
            model = load_streamed(auto, source.path, config) if source.is_gguf else None
            if model is None:
                with compact_gguf_reader() if source.is_gguf else contextlib.nullcontext():
                    model = auto.from_pretrained(folder, config=config, local_files_only=True, **options)
        except Exception as e:  # missing, truncated or mismatched weights: each library has its own type
            raise ModelLoadError(f"cannot load the weights of {what} for task {task!r} ({name}): {e}. {fix}") from e
        if source.is_gguf and getattr(model, "hf_quantizer", None) is not None:  # our own new, dequantized model
            model.hf_quantizer.remove_quantization_config(model)
        return model.eval()
    raise UnsupportedTaskError(f"no model head for task {task!r} fits {what}: {'; '.join(errors)}")


def load_hollow_model(
    source: ModelSource, task: str, dtype: torch.dtype, *, trust_remote_code: bool = False
) -> tuple[torch.nn.Module, WeightSource]:
    """The model of ``task``'s head built from the folder's config with hollow parameters in
    ``dtype`` (no memory; see :mod:`onnxspec.build.streamed`), in eval mode, with hooks that read
    each block's weights from the safetensors shards only while it runs; and where its weights are.

    Nothing is loaded: the model is built with its parameters on the ``meta`` device and its
    buffers real, then every parameter is matched to a checkpoint tensor (a missing one raises
    :class:`~onnxspec.errors.ModelLoadError` naming it).
    """
    import transformers

    folder = source.folder
    if source.gguf_file is not None:
        raise ModelLoadError(
            f"{source.path!r} is a GGUF file: its weights are quantized and cannot be streamed; export it without --stream-weights"
        )
    _refuse_remote_code(folder, source.config_json, trust_remote_code)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:
        raise ModelLoadError(f"cannot read the config of {folder!r}: {e}") from e
    errors: list[str] = []
    for name in head_classes(task, getattr(config, "model_type", "")):
        auto = getattr(transformers, name)
        if not _loads(auto, config) and not trust_remote_code:
            errors.append(f"{name} has no model for {type(config).__name__}")
            continue
        with params_on_meta():
            model = (auto.from_config(config, trust_remote_code=trust_remote_code) if hasattr(auto, "from_config")
                     else auto._from_config(config))
        model = model.to(dtype)  # the parameters are on meta: only the buffers are converted
        weights = hollow_parameters(model, folder, dtype)
        load_on_call(model, weights)
        return model.eval(), weights
    raise UnsupportedTaskError(f"no model head for task {task!r} fits {folder!r}: {'; '.join(errors)}")


VOCODER_TYPES = ("speecht5_hifigan",)
"""The ``model_type`` of the vocoders :func:`load_vocoder` reads (SpeechT5's HiFi-GAN)."""


def load_vocoder(folder: str | os.PathLike[str]) -> torch.nn.Module:
    """The vocoder saved in ``folder`` (a local folder or a Hub ID, as for the model), in eval mode:
    a ``SpeechT5HifiGan`` (``microsoft/speecht5_hifigan``), which turns SpeechT5's spectrograms
    into waveforms. Never fetches beyond resolving a Hub ID, never runs remote code."""
    import transformers

    folder = model_folder(folder)
    try:
        config_json = read_config_json(folder)
    except ModelLoadError as e:
        raise ModelLoadError(f"vocoder: {e}".replace("point --model at", "pass as --vocoder")) from e
    kind = config_json.get("model_type")
    if kind not in VOCODER_TYPES:
        raise ModelLoadError(
            f"vocoder folder {folder!r} holds a {kind!r} model, not a vocoder ({', '.join(VOCODER_TYPES)}); pass the folder "
            "of a SpeechT5HifiGan (e.g. microsoft/speecht5_hifigan) as vocoder=PATH (--vocoder PATH)"
        )
    try:
        return transformers.SpeechT5HifiGan.from_pretrained(folder, local_files_only=True).eval()
    except Exception as e:  # missing, truncated or mismatched weights
        raise ModelLoadError(
            f"cannot load the vocoder in {folder!r}: {e}. Check that its weights are present and complete "
            "(save it again with save_pretrained)"
        ) from e


def exported_config_json(model: torch.nn.Module) -> dict[str, Any]:
    """The ``config.json`` written beside a model's graphs, read from the model without changing it.

    A GGUF ``quantization_config`` is left out (the graphs hold dequantized weights, and a
    runtime reading it would look for a GGUF file), and a missing ``architectures`` names the
    model's class, so runtimes know which head the graphs have.
    """
    data = json.loads(model.config.to_json_string())
    quantization = data.get("quantization_config")
    if isinstance(quantization, Mapping) and str(quantization.get("quant_method", "")).lower().endswith("gguf"):
        data = {k: v for k, v in data.items() if k != "quantization_config"}
    if not data.get("architectures"):
        data = {**data, "architectures": [type(model).__name__]}
    return data


def save_gguf_tokenizer(source: ModelSource, destination: str) -> tuple[tuple[str, ...], str]:
    """Build the tokenizer a GGUF file describes and save it in ``destination`` (best effort).

    Returns the files written and ``""``, or no files and why none was saved (a GGUF file may
    carry no tokenizer, or one transformers cannot build): the graphs are still usable.

    transformers' converters build the tokenizer from Python objects (for gemma-3-270m's 262k
    tokens: 515k merges recovered from the scores, 0.3 GiB at the peak): the heap's free memory
    is given back before and after (gemma-3-270m: 86 MiB less kept after the tokenizer).
    """
    import transformers

    if source.gguf_file is None:
        raise ValueError("save_gguf_tokenizer needs a GGUF source")
    before = set(os.listdir(destination))
    gc.collect()
    release_heap()
    try:
        with compact_gguf_reader():
            tokenizer = transformers.AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file, local_files_only=True)
        tokenizer.save_pretrained(destination)
        del tokenizer
    except Exception as e:  # noqa: BLE001 - any failure only means "no tokenizer"; the reason is reported
        for name in set(os.listdir(destination)) - before:
            path = os.path.join(destination, name)
            if os.path.isfile(path):
                os.remove(path)
        reason = str(e).splitlines()[0] if str(e) else ""
        return (), f"no tokenizer saved: transformers cannot build one from {source.gguf_file!r} ({type(e).__name__}: {reason})"
    finally:
        gc.collect()
        release_heap()
    return tuple(sorted(set(os.listdir(destination)) - before)), ""
