"""Tiny real tokenizer files, built offline: a SentencePiece model written with the protobuf
schema transformers ships (no ``sentencepiece`` package, no download), and the folders real
checkpoints hold (T5: ``spiece.model`` + ``tokenizer.json``; Marian: ``source.spm``,
``target.spm``, ``vocab.json``)."""

from __future__ import annotations

import json
import os

_WORDS = "the a cat dog sat on mat".split()


def sentencepiece_model(path: str | os.PathLike[str]) -> str:
    """Write a tiny unigram SentencePiece model (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) to ``path``."""
    from transformers.utils import sentencepiece_model_pb2_new as pb

    model = pb.ModelProto()
    pieces = [("<pad>", 0.0, 3), ("</s>", 0.0, 3), ("<unk>", 0.0, 2)]
    pieces += [("▁" + w, -float(i), 1) for i, w in enumerate(_WORDS)]
    pieces += [(c, -10.0 - i, 1) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz▁")]
    for piece, score, kind in pieces:
        p = model.pieces.add()
        p.piece, p.score, p.type = piece, score, kind
    model.trainer_spec.model_type = 1  # unigram
    model.trainer_spec.unk_id, model.trainer_spec.pad_id, model.trainer_spec.eos_id, model.trainer_spec.bos_id = 2, 0, 1, -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return os.fspath(path)


def t5_tokenizer_files(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    """Save a T5 tokenizer into ``folder`` as the Hub's t5 checkpoints hold it; return the names."""
    import transformers

    folder = os.fspath(folder)
    spm = sentencepiece_model(os.path.join(folder, "spiece.model"))
    transformers.T5Tokenizer(vocab_file=spm, extra_ids=0).save_pretrained(folder)
    return ("spiece.model", "tokenizer.json", "tokenizer_config.json")


def marian_tokenizer_files(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    """Write the files of a Marian (Helsinki-NLP opus-mt) tokenizer into ``folder``."""
    folder = os.fspath(folder)
    sentencepiece_model(os.path.join(folder, "source.spm"))
    sentencepiece_model(os.path.join(folder, "target.spm"))
    vocab = {p: i for i, p in enumerate(["</s>", "<unk>", *("▁" + w for w in _WORDS), "<pad>"])}
    files = {
        "vocab.json": vocab,
        "tokenizer_config.json": {"tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de",
                                  "model_max_length": 512, "separate_vocabs": False},
        "special_tokens_map.json": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    }
    for name, data in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump(data, f)
    return ("source.spm", "target.spm", *files)
