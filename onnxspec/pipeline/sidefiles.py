"""The files copied beside the graphs: config, tokenizer and processor files of a model folder.

A runtime needs the model's tokenizer (or feature extractor, image processor, processor) next
to the graphs to run them from text, audio or images. Which files a tokenizer reads is declared
by its class (``vocab_files_names``: ``spiece.model`` for T5, ``tokenizer.model`` for Llama,
``source.spm`` / ``target.spm`` / ``vocab.json`` for Marian, ``normalizer.json`` for Whisper
...), so :func:`side_files` resolves the class, without instantiating it, loading weights or
touching the network: the ``tokenizer_class`` of ``tokenizer_config.json``, else transformers'
tokenizer of the folder's ``model_type``. When the class cannot be resolved (custom code, or a
class whose backend, e.g. ``sentencepiece``, is not installed) the known names of
:data:`KNOWN_TOKENIZER_FILES` are used instead. Processor and preprocessor configs present in
the folder are copied as they are.

:func:`side_files` only reads the folder and says what to copy (and warns when the folder has
no tokenizer and no preprocessor at all); :func:`copy_side_files` copies.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "KNOWN_TOKENIZER_FILES",
    "MODEL_FILES",
    "PREPROCESSOR_FILES",
    "TOKENIZER_CONFIG_FILES",
    "SideFiles",
    "copy_side_files",
    "declared_tokenizer_files",
    "side_files",
    "tokenizer_class_name",
]

MODEL_FILES = ("config.json", "generation_config.json")
"""The model's own configs, copied whenever present."""

TOKENIZER_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")
"""Files every tokenizer may have besides the ones its class declares."""

PREPROCESSOR_FILES = (
    "preprocessor_config.json",  # feature extractors and image processors
    "processor_config.json",
    "video_preprocessor_config.json",
    "audio_tokenizer_config.json",
    "chat_template.json",  # a processor's chat template (older layout)
)
"""Processor, feature extractor and image processor configs (transformers' file names)."""

CHAT_TEMPLATE_DIR = "additional_chat_templates"
"""A folder of extra named chat templates (``<name>.jinja``), copied whole when present."""

KNOWN_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "spm.model",
    "sentencepiece.bpe.model",
    "sentencepiece.model",
    "source.spm",
    "target.spm",
    "target_vocab.json",
    "normalizer.json",
    "bpe.codes",
    "emoji.json",
    "prophetnet.tokenizer",
    "entity_vocab.json",
    "tokenizer.tiktoken",
)
"""The fallback when the tokenizer class cannot be resolved: vocab files transformers' tokenizers
read (among them Marian's ``source.spm``/``target.spm``, DeBERTa-v2's ``spm.model``, Whisper's
``normalizer.json``)."""


@attrs.frozen(kw_only=True)
class SideFiles:
    """What to copy from a model folder: names relative to it, how the tokenizer files were
    chosen, and a warning when the folder has no tokenizer and no preprocessor."""

    folder: str
    files: tuple[str, ...]
    tokenizer_class: str | None = None
    """The tokenizer class whose ``vocab_files_names`` chose the files, or ``None``."""
    how: str = ""
    warning: str = ""

    @property
    def has_tokenizer_or_preprocessor(self) -> bool:
        return not self.warning


def _read_json(path: str) -> Mapping[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def tokenizer_class_name(folder: str, config_json: Mapping[str, Any]) -> str | None:
    """The tokenizer class a folder names (``tokenizer_config.json``), else the one transformers
    maps its ``model_type`` to, else ``None``."""
    named = _read_json(os.path.join(folder, "tokenizer_config.json")).get("tokenizer_class")
    if isinstance(named, str) and named:
        return named
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    mapped = TOKENIZER_MAPPING_NAMES.get(str(config_json.get("model_type", "")))
    if isinstance(mapped, (tuple, list)):  # transformers < 5: (slow, fast)
        mapped = next((m for m in reversed(mapped) if m), None)
    return mapped or None


def declared_tokenizer_files(class_name: str) -> tuple[tuple[str, ...] | None, str]:
    """The file names ``class_name``'s ``vocab_files_names`` declares, and ``""``; or ``None``
    and why the class could not be resolved. Imports the class's module only."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    try:
        cls = tokenizer_class_from_name(class_name)
        names = None if cls is None else cls.vocab_files_names  # a missing backend raises here
    except Exception as e:  # noqa: BLE001 - any failure means "use the known names"; the reason is kept
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        return None, f"{class_name} cannot be resolved ({type(e).__name__}: {first})"
    if cls is None:
        return None, f"{class_name} is not a transformers tokenizer class"
    return tuple(str(v) for v in dict(names).values() if isinstance(v, str)), ""


def _present(folder: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in dict.fromkeys(names) if os.path.isfile(os.path.join(folder, n)))


def side_files(folder: str, config_json: Mapping[str, Any]) -> SideFiles:
    """What to copy from the model ``folder`` beside the graphs (reads the folder only)."""
    class_name = tokenizer_class_name(folder, config_json)
    declared, problem = declared_tokenizer_files(class_name) if class_name else (None, "no tokenizer class is named")
    if declared is not None:
        vocab, how = declared, f"the files {class_name} declares (vocab_files_names)"
    else:
        vocab, how = KNOWN_TOKENIZER_FILES, f"known tokenizer file names ({problem})"
    tokenizer = _present(folder, (*vocab, *TOKENIZER_CONFIG_FILES))
    preprocessor = _present(folder, PREPROCESSOR_FILES)
    templates_dir = os.path.join(folder, CHAT_TEMPLATE_DIR)
    templates = (
        tuple(f"{CHAT_TEMPLATE_DIR}/{n}" for n in sorted(os.listdir(templates_dir)) if os.path.isfile(os.path.join(templates_dir, n)))
        if os.path.isdir(templates_dir)
        else ()
    )
    warning = ""
    if not tokenizer and not preprocessor:
        warning = (
            f"the model folder {folder!r} has no tokenizer and no preprocessor files (tokenizer.json, "
            "tokenizer_config.json, preprocessor_config.json ...), so none were copied: to run the graphs from "
            "text, audio or images, save the original checkpoint's tokenizer or processor into the model folder "
            "(tokenizer.save_pretrained(folder)) and export again, or copy its files beside the graphs"
        )
    files = (*_present(folder, MODEL_FILES), *tokenizer, *preprocessor, *templates)
    return SideFiles(
        folder=folder,
        files=tuple(dict.fromkeys(files)),
        tokenizer_class=class_name if declared is not None else None,
        how=how,
        warning=warning,
    )


def copy_side_files(side: SideFiles, destination: str) -> tuple[str, ...]:
    """Copy ``side.files`` from ``side.folder`` into ``destination``; return the names copied."""
    for name in side.files:
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(side.folder, name), target)
    return side.files
