"""Cache graphs proven over several decoding steps, not single calls.

Each test exports a tiny random model with the pipeline, then decodes greedily with
onnxruntime alone, feeding each step's ``present.*`` outputs back as ``past_key_values.*``
inputs, and compares the generated ids and every step's logits with PyTorch's own decoding
(``model.generate`` or the model's forward with its own cache, never onnxspec's wrapper).
A cache graph that is right for one call but wrong when chained (a frozen past length, a
position offset, a cross-attention cache ignored or recomputed) fails here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime
import pytest
import torch
from transformers import GenerationConfig

from onnxspec.pieces.cache_names import is_cache_input, is_cache_output, is_cross, to_past
from onnxspec.pieces.generators import context, make_dummies
from onnxspec.build.merge import BRANCH_INPUT
from onnxspec.catalog.models import REGISTRY
from onnxspec.pipeline.core import export, load_model
from onnxspec.catalog.registry import spec_for
from onnxspec.judge.report import ExportReport
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import Behavior, bind, with_behavior
from onnxspec.pieces.tasks import parse_task
from tests.tiny import CONFIGS, tiny_folder

STEPS = 4
ATOL = 1e-4


def _session(path: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _run(session: onnxruntime.InferenceSession, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    wanted = {i.name for i in session.get_inputs()}
    assert set(feed) == wanted, f"feed {sorted(feed)} != graph inputs {sorted(wanted)}"
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feed))))


def _as_past(outputs: Mapping[str, np.ndarray], keep: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """``present.X`` outputs renamed ``past_key_values.X``; ``keep`` (e.g. a cross cache) added."""
    past = {to_past(k): v for k, v in outputs.items() if is_cache_output(k)}
    return {**(keep or {}), **past}


def _greedy_config(model: torch.nn.Module, decoder_start: int | None = None, steps: int = STEPS) -> GenerationConfig:
    """Plain greedy decoding for exactly ``steps`` tokens: no eos stop, no logits processors."""
    return GenerationConfig(
        max_new_tokens=steps,
        min_new_tokens=0,
        do_sample=False,
        num_beams=1,
        eos_token_id=None,
        pad_token_id=getattr(model.config, "pad_token_id", None),
        bos_token_id=getattr(model.config, "bos_token_id", None),
        decoder_start_token_id=decoder_start,
        use_cache=True,
    )


def _export(model_type: str, task: str, tmp_path, folder: str | None = None) -> tuple[torch.nn.Module, str, ExportReport]:
    folder = folder or tiny_folder(model_type, task, tmp_path / "model")
    out = tmp_path / "onnx"
    report = export(folder, out, task=task)
    assert report.passed, report.failures
    for graph in report.graphs:
        for check in graph.checks:
            # validation is never vacuous: every output of every graph compares some values
            assert check.compared > 0, (graph.filename, check.output, check.shape_set)
    return load_model(folder, parse_task(task).name), str(out), report


def _left_padded_prompt(vocab: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Two prompts, the second 3 tokens shorter and padded on the left, no pad id inside."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, vocab, size=(2, 7), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    ids[1, :3] = pad
    return ids, mask


@pytest.mark.integration
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen3_moe", "mixtral"])
def test_decoder_only_greedy_decoding_matches_generate(model_type: str, tmp_path) -> None:
    model, out, report = _export(model_type, "text-generation-with-past", tmp_path)
    logits = [c for c in report.graphs[0].checks if c.output == "logits"]
    # left-padded dummies: some logits checks skip the padded positions, none skips them all
    assert any(c.compared < np.prod(c.torch_shape) for c in logits), [(c.shape_set, c.compared) for c in logits]
    config = model.config
    session = _session(f"{out}/model.onnx")
    ids, mask = _left_padded_prompt(config.vocab_size, config.pad_token_id)

    with torch.no_grad():
        reference = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            generation_config=_greedy_config(model),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, ids.shape[1]:].numpy()
    want_logits = [x.numpy() for x in reference.logits]
    assert want_ids.shape == (2, STEPS)

    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    past = {
        f"past_key_values.{i}.{which}": np.zeros((2, kv_heads, 0, head_dim), np.float32)
        for i in range(layers)
        for which in ("key", "value")
    }
    step_ids, got_ids, got_logits = ids, [], []
    for _ in range(STEPS):
        positions = np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)[:, -step_ids.shape[1]:]
        feed = {"input_ids": step_ids, "attention_mask": mask, "position_ids": positions, **past}
        outputs = _run(session, feed)
        last = outputs["logits"][:, -1, :]
        token = last.argmax(-1)
        got_logits.append(last)
        got_ids.append(token)
        past = _as_past(outputs)
        total = mask.shape[1]
        assert outputs["present.0.key"].shape[2] == total, "the cache must grow by the tokens fed"
        step_ids = token[:, None].astype(np.int64)
        mask = np.concatenate([mask, np.ones((2, 1), mask.dtype)], axis=1)

    np.testing.assert_array_equal(np.stack(got_ids, axis=1), want_ids)
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-3, err_msg=f"logits of step {step}")


def _seq2seq_decode(out: str, first_feed: Mapping[str, np.ndarray], with_mask: np.ndarray | None, start: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding with onnxruntime: encoder once, decoder_model for the first step,
    decoder_with_past_model after, the cross cache of the first step reused every step."""
    encoder = _session(f"{out}/encoder_model.onnx")
    decoder = _session(f"{out}/decoder_model.onnx")
    with_past = _session(f"{out}/decoder_with_past_model.onnx")
    hidden = _run(encoder, first_feed)["last_hidden_state"]
    batch = hidden.shape[0]
    tokens = np.full((batch, 1), start, np.int64)
    masks = {} if with_mask is None else {"encoder_attention_mask": with_mask}
    outputs = _run(decoder, {"input_ids": tokens, "encoder_hidden_states": hidden, **masks})
    cross = {k.replace("present.", "past_key_values.", 1): v for k, v in outputs.items() if ".encoder." in k}
    assert cross, "the first decoder step must return the cross-attention cache"
    got_ids, got_logits = [], []
    for step in range(STEPS):
        if step:
            outputs = _run(with_past, {"input_ids": tokens, **masks, **past})
            assert not any(".encoder." in k for k in outputs), "the with-past decoder must not recompute the cross cache"
            assert outputs["present.0.decoder.key"].shape[2] == step + 1
        last = outputs["logits"][:, -1, :]
        tokens = last.argmax(-1)[:, None].astype(np.int64)
        got_ids.append(tokens[:, 0])
        got_logits.append(last)
        past = _as_past({k: v for k, v in outputs.items() if ".decoder." in k}, keep=cross)
    return np.stack(got_ids, axis=1), got_logits


def _assert_same(got_ids: np.ndarray, got_logits: list[np.ndarray], want_ids: np.ndarray, want_logits: list[np.ndarray]) -> None:
    np.testing.assert_array_equal(got_ids, want_ids)
    assert len(got_logits) == len(want_logits) == STEPS
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-3, err_msg=f"logits of step {step}")


@pytest.mark.integration
def test_t5_greedy_decoding_matches_generate(tmp_path) -> None:
    model, out, _ = _export("t5", "text2text-generation-with-past", tmp_path)
    config = model.config
    rng = np.random.default_rng(1)
    ids = rng.integers(2, config.vocab_size, size=(2, 9), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # the encoder's inputs are padded on the right
    ids[1, 6:] = config.pad_token_id

    with torch.no_grad():
        reference = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            generation_config=_greedy_config(model, config.decoder_start_token_id),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    got_ids, got_logits = _seq2seq_decode(out, {"input_ids": ids, "attention_mask": mask}, mask, config.decoder_start_token_id)
    _assert_same(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])


@pytest.mark.integration
def test_whisper_greedy_decoding_matches_pytorch(tmp_path) -> None:
    model, out, _ = _export("whisper", "automatic-speech-recognition-with-past", tmp_path)
    config = model.config
    frames = 2 * config.max_source_positions
    features = np.random.default_rng(2).standard_normal((2, config.num_mel_bins, frames)).astype(np.float32)
    start = config.decoder_start_token_id

    # PyTorch's reference: the model's forward with the cache it builds and returns itself.
    want_ids, want_logits = [], []
    with torch.no_grad():
        encoded = model.get_encoder()(torch.from_numpy(features))
        tokens = torch.full((2, 1), start, dtype=torch.long)
        cache = None
        for _ in range(STEPS):
            result = model(encoder_outputs=encoded, decoder_input_ids=tokens, cache=cache, use_cache=True, return_dict=True)
            cache = result.cache
            last = result.logits[:, -1, :]
            tokens = last.argmax(-1, keepdim=True)
            want_ids.append(tokens[:, 0].numpy())
            want_logits.append(last.numpy())

    got_ids, got_logits = _seq2seq_decode(out, {"input_features": features}, None, start)
    _assert_same(got_ids, got_logits, np.stack(want_ids, axis=1), want_logits)


MERGED_STEPS = 12


def _merged_decode(out: str, first_feed: Mapping[str, np.ndarray], mask: np.ndarray | None, start: int, steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding as transformers.js does it: ``encoder_model.onnx`` once, then
    ``decoder_model_merged.onnx`` for every step, the first with ``use_cache_branch=False`` and
    an empty cache, later ones with ``True`` and all of the previous step's ``present.*``."""
    encoder = _session(f"{out}/encoder_model.onnx")
    decoder = _session(f"{out}/decoder_model_merged.onnx")
    hidden = _run(encoder, first_feed)["last_hidden_state"]
    batch = hidden.shape[0]
    past = {
        i.name: np.zeros([batch if k == 0 else 0 if k == 2 else d for k, d in enumerate(i.shape)], np.float32)
        for i in decoder.get_inputs()
        if is_cache_input(i.name)
    }
    assert past and all(isinstance(d, int) for a in past.values() for d in a.shape)
    masks = {} if mask is None else {"encoder_attention_mask": mask}
    tokens = np.full((batch, 1), start, np.int64)
    got_ids, got_logits, cross = [], [], None
    for step in range(steps):
        feed = {"input_ids": tokens, "encoder_hidden_states": hidden, **masks, **past, BRANCH_INPUT: np.array([step > 0])}
        outputs = _run(decoder, feed)
        assert outputs["present.0.decoder.key"].shape[2] == step + 1, "the self-attention cache grows by one token a step"
        step_cross = {k: v for k, v in outputs.items() if is_cross(k)}
        if cross is None:
            cross = step_cross
            assert cross and all(v.shape[2] == hidden.shape[1] for v in cross.values())
        for name, value in step_cross.items():  # the cache branch passes the cross cache through
            np.testing.assert_array_equal(value, cross[name], err_msg=f"{name} at step {step}")
        last = outputs["logits"][:, -1, :]
        tokens = last.argmax(-1)[:, None].astype(np.int64)
        got_ids.append(tokens[:, 0])
        got_logits.append(last)
        past = _as_past(outputs)
    return np.stack(got_ids, axis=1), got_logits


def _assert_same_steps(got_ids: np.ndarray, got_logits: list[np.ndarray], want_ids: np.ndarray, want_logits: list[np.ndarray]) -> None:
    np.testing.assert_array_equal(got_ids, want_ids)
    assert got_ids.shape == (2, MERGED_STEPS) and len(got_logits) == len(want_logits) == MERGED_STEPS
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-3, err_msg=f"logits of step {step}")


def _lively_folder(model_type: str, task: str, folder, **changes: float) -> str:
    """A tiny model whose weights are spread enough for greedy decoding to pick varied tokens
    (at the configs' init_std of 0.02 a random BART or Whisper repeats one token forever)."""
    import transformers

    config = CONFIGS[model_type]()
    for name, value in changes.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    auto = transformers.AutoModelForSpeechSeq2Seq if model_type == "whisper" else transformers.AutoModelForSeq2SeqLM
    auto.from_config(config).save_pretrained(folder)
    return str(folder)


def _no_stops(model: torch.nn.Module, steps: int, decoder_start: int) -> GenerationConfig:
    """The greedy config, with the model's own eos and forced-eos defaults dropped: they would
    stop or rewrite the decode (unset fields of a config given to generate take the model's)."""
    model.generation_config.eos_token_id = None
    model.generation_config.forced_eos_token_id = None
    return _greedy_config(model, decoder_start, steps=steps)


def _right_padded_text(vocab: int, pad: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two encoder inputs, the second 4 tokens shorter and padded on the right."""
    ids = np.random.default_rng(seed).integers(3, vocab, size=(2, 11), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[1, 7:] = pad
    return ids, mask


@pytest.mark.integration
@pytest.mark.parametrize(("model_type", "changes", "seed"), [("t5", {"initializer_factor": 10.0}, 6), ("bart", {"init_std": 0.2}, 5)])
def test_merged_decoder_alone_generates_what_generate_does(model_type: str, changes: dict[str, float], seed: int, tmp_path) -> None:
    task = "text2text-generation-with-past"
    folder = _lively_folder(model_type, task, tmp_path / "model", **changes)
    model, out, report = _export(model_type, task, tmp_path, folder)
    assert "decoder_model_merged.onnx" in report.files
    config = model.config
    ids, mask = _right_padded_text(config.vocab_size, config.pad_token_id, seed=seed)
    with torch.no_grad():
        reference = model.generate(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            generation_config=_no_stops(model, MERGED_STEPS, config.decoder_start_token_id),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    assert len(set(want_ids.ravel().tolist())) > 2 and (want_ids[0] != want_ids[1]).any(), want_ids  # a decode worth comparing
    got_ids, got_logits = _merged_decode(out, {"input_ids": ids, "attention_mask": mask}, mask, config.decoder_start_token_id, MERGED_STEPS)
    _assert_same_steps(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])


@pytest.mark.integration
def test_whisper_merged_decoder_alone_generates_what_generate_does(tmp_path) -> None:
    from transformers.generation.utils import GenerationMixin

    task = "automatic-speech-recognition-with-past"
    model, out, report = _export("whisper", task, tmp_path, _lively_folder("whisper", task, tmp_path / "model", init_std=0.2))
    assert "decoder_model_merged.onnx" in report.files
    config = model.config
    frames = 2 * config.max_source_positions
    features = np.random.default_rng(6).standard_normal((2, config.num_mel_bins, frames)).astype(np.float32)
    features[1, :, frames // 2:] = -1.5  # the second clip is shorter: padded with a constant log-mel floor
    start = config.decoder_start_token_id
    with torch.no_grad():
        # transformers' own greedy generate loop (Whisper's override adds language and timestamp
        # logic a random tiny model has no tokens for)
        reference = GenerationMixin.generate(
            model,
            input_features=torch.from_numpy(features),
            generation_config=_no_stops(model, MERGED_STEPS, start),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    assert len(set(want_ids.ravel().tolist())) > 2 and (want_ids[0] != want_ids[1]).any(), want_ids  # a decode worth comparing
    got_ids, got_logits = _merged_decode(out, {"input_features": features}, None, start, MERGED_STEPS)
    _assert_same_steps(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])


def test_tiny_configs_exercise_grouped_query_attention() -> None:
    """The llama case above is only meaningful if its cache differs from the naive layout."""
    config = CONFIGS["llama"]()
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.head_dim != config.hidden_size // config.num_attention_heads


@pytest.mark.parametrize(
    ("model_type", "task", "first_step", "later_steps"),
    [
        ("t5", "text2text-generation-with-past", ["input_ids", "encoder_attention_mask", "encoder_hidden_states"], ["input_ids", "encoder_attention_mask"]),
        ("bart", "text2text-generation-with-past", ["input_ids", "encoder_attention_mask", "encoder_hidden_states"], ["input_ids", "encoder_attention_mask"]),
        ("whisper", "automatic-speech-recognition-with-past", ["input_ids", "encoder_hidden_states"], ["input_ids"]),
    ],
)
def test_seq2seq_decoder_contract(model_type: str, task: str, first_step: list[str], later_steps: list[str]) -> None:
    """The first decoder step reads the encoder output; later steps read the cross-attention
    cache instead of ``encoder_hidden_states`` but keep the encoder mask (Optimum's layout)."""
    spec = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
    first = with_behavior(spec, Behavior.DECODER, use_past=True, use_past_in_inputs=False)
    later = with_behavior(spec, Behavior.DECODER, use_past=True, use_past_in_inputs=True)
    assert [t.name for t in first.inputs] == first_step
    layers = spec.past.num_layers
    cache = [f"past_key_values.{i}.{part}.{which}" for i in range(layers) for part in ("decoder", "encoder") for which in ("key", "value")]
    assert [t.name for t in later.inputs] == later_steps + cache
    assert len([t for t in first.outputs if t.name.startswith("present.")]) == 4 * layers
    assert len([t for t in later.outputs if t.name.startswith("present.")]) == 2 * layers


@pytest.mark.parametrize(
    ("model_type", "task", "behavior", "mask", "side"),
    [
        ("gpt2", "text-generation-with-past", Behavior.MONOLITH, "attention_mask", "left"),
        ("llama", "text-generation-with-past", Behavior.MONOLITH, "attention_mask", "left"),
        ("t5", "text2text-generation-with-past", Behavior.DECODER, "encoder_attention_mask", "right"),
        ("bart", "text2text-generation-with-past", Behavior.DECODER, "encoder_attention_mask", "right"),
        ("bart", "text2text-generation-with-past", Behavior.ENCODER, "attention_mask", "right"),
    ],
)
def test_dummy_masks_pad_on_the_side_the_model_expects(model_type: str, task: str, behavior: Behavior, mask: str, side: str) -> None:
    """Decoder-only prompts are padded on the left (generation appends on the right);
    encoder inputs, and the encoder mask a seq2seq decoder reads, on the right."""
    bound = bind(spec_for(REGISTRY, model_type, task), CONFIGS[model_type]())
    cached = bound.graphs[behavior.value].past
    spec = with_behavior(bound, behavior, use_past=cached, use_past_in_inputs=cached)
    shapes = Shapes(batch_size=8, sequence_length=9, past_sequence_length=4)
    ctx = context(shapes, DTypes(), spec.dims, past=spec.past, padding_side=spec.padding_side)
    made = make_dummies(spec.inputs, spec.generators, ctx, seed=3).get(mask)
    assert made is not None, f"{mask} is not an input of {[t.name for t in spec.inputs]}"
    rows = made.numpy()
    assert (rows.sum(-1) < rows.shape[-1]).any(), "no row is padded: the check below would prove nothing"
    steps = np.diff(rows, axis=-1)
    assert (steps >= 0).all() if side == "left" else (steps <= 0).all(), rows


def test_replaced_by_cache_is_checked() -> None:
    """Only inputs of a cache-carrying graph can be replaced, and only a seq2seq cache can
    replace ``encoder_hidden_states``."""
    import attrs

    from onnxspec.errors import SpecError
    from onnxspec.pieces.past import PastKind
    from onnxspec.pieces.spec import GraphIO

    t5 = spec_for(REGISTRY, "t5", "text2text-generation-with-past")
    decoder = t5.graphs["decoder"]
    with pytest.raises(SpecError, match="not inputs"):
        attrs.evolve(decoder, replaced_by_cache={"encoder_outputs"})
    with pytest.raises(SpecError, match="no cache"):
        GraphIO(inputs=decoder.inputs, outputs=decoder.outputs, replaced_by_cache={"encoder_hidden_states"})
    with pytest.raises(SpecError, match="only a seq2seq cache"):
        attrs.evolve(t5, past_kind=PastKind.DECODER_ONLY)


def _lively_pair_folder(model_type: str, folder, auto_name: str, config_name: str | None = None, **std: float) -> str:
    """A tiny model of ``model_type`` (or of a :data:`tests.tiny.VISION_PAIRS` entry), its
    weights drawn with the given std per (sub-)config attribute (``"decoder.initializer_range"``)
    so that greedy decoding picks varied tokens."""
    import transformers

    from tests.tiny import VISION_PAIRS

    config = VISION_PAIRS[config_name]() if config_name else CONFIGS[model_type]()
    for path, value in std.items():
        *parents, name = path.split(".")
        target = config
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)
    torch.manual_seed(0)
    getattr(transformers, auto_name).from_config(config).save_pretrained(folder)
    return str(folder)


@pytest.mark.integration
@pytest.mark.parametrize("pair", ["vit-gpt2", "swin-mbart"])
def test_vision_encoder_decoder_merged_decoder_alone_generates_what_generate_does(pair: str, tmp_path) -> None:
    """Images -> text through encoder_model.onnx + decoder_model_merged.onnx: ViT (width 32) ->
    GPT-2 (width 48, the projection inside the decoder graph), and Donut-style Swin -> mBART."""
    std = {"vit-gpt2": {"decoder.initializer_range": 0.3}, "swin-mbart": {"decoder.init_std": 0.3, "encoder.initializer_range": 0.3}}[pair]
    folder = _lively_pair_folder("vision-encoder-decoder", tmp_path / "model", "AutoModelForImageTextToText", pair, **std)
    model, out, report = _export("vision-encoder-decoder", "image-to-text-with-past", tmp_path, folder)
    assert "decoder_model_merged.onnx" in report.files
    config = model.config
    size = config.encoder.image_size
    pixels = np.random.default_rng(7).random((2, config.encoder.num_channels, size, size)).astype(np.float32)
    start = config.decoder_start_token_id
    with torch.no_grad():
        reference = model.generate(
            pixel_values=torch.from_numpy(pixels),
            generation_config=_no_stops(model, MERGED_STEPS, start),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    assert len(set(want_ids.ravel().tolist())) > 2 and (want_ids[0] != want_ids[1]).any(), want_ids  # a decode worth comparing
    got_ids, got_logits = _merged_decode(out, {"pixel_values": pixels}, None, start, MERGED_STEPS)
    _assert_same_steps(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])


@pytest.mark.integration
def test_speech_to_text_merged_decoder_alone_generates_what_generate_does(tmp_path) -> None:
    """Filterbank frames with a mask (the second clip shorter) -> text through encoder_model.onnx
    + decoder_model_merged.onnx; the decoder reads the frame mask as encoder_attention_mask."""
    task = "automatic-speech-recognition-with-past"
    folder = _lively_pair_folder("speech_to_text", tmp_path / "model", "AutoModelForSpeechSeq2Seq", init_std=0.5)
    model, out, report = _export("speech_to_text", task, tmp_path, folder)
    assert "decoder_model_merged.onnx" in report.files
    config = model.config
    features = np.random.default_rng(8).standard_normal((2, 29, config.input_feat_per_channel)).astype(np.float32)
    mask = np.ones((2, 29), np.int64)
    mask[1, 17:] = 0
    features[1, 17:] = 0.0
    start = config.decoder_start_token_id
    with torch.no_grad():
        reference = model.generate(
            input_features=torch.from_numpy(features),
            attention_mask=torch.from_numpy(mask),
            generation_config=_no_stops(model, MERGED_STEPS, start),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    assert len(set(want_ids.ravel().tolist())) > 2 and (want_ids[0] != want_ids[1]).any(), want_ids  # a decode worth comparing
    got_ids, got_logits = _merged_decode(out, {"input_features": features, "attention_mask": mask}, mask, start, MERGED_STEPS)
    _assert_same_steps(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])


@pytest.mark.integration
def test_moonshine_merged_decoder_alone_generates_what_generate_does(tmp_path) -> None:
    """A raw waveform -> text through encoder_model.onnx + decoder_model_merged.onnx."""
    task = "automatic-speech-recognition-with-past"
    folder = _lively_pair_folder("moonshine", tmp_path / "model", "AutoModelForSpeechSeq2Seq", initializer_range=0.2)
    model, out, report = _export("moonshine", task, tmp_path, folder)
    assert "decoder_model_merged.onnx" in report.files
    waves = np.random.default_rng(9).standard_normal((2, 4000)).astype(np.float32)
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        reference = model.generate(
            input_values=torch.from_numpy(waves),
            generation_config=_no_stops(model, MERGED_STEPS, start),
            return_dict_in_generate=True,
            output_logits=True,
        )
    want_ids = reference.sequences[:, 1:].numpy()
    assert len(set(want_ids.ravel().tolist())) > 2 and (want_ids[0] != want_ids[1]).any(), want_ids  # a decode worth comparing
    got_ids, got_logits = _merged_decode(out, {"input_values": waves}, None, start, MERGED_STEPS)
    _assert_same_steps(got_ids, got_logits, want_ids, [x.numpy() for x in reference.logits])
