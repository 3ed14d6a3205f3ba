"""SpeechT5 text to speech: its files, their names and axes, the prenet with its dropout draws
given, and the vocoder option (required, refused elsewhere, checked when loaded)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from onnxspec.catalog.models import REGISTRY, UNSUPPORTED
from onnxspec.catalog.registry import spec_for
from onnxspec.catalog.speecht5 import _prenet, needs_vocoder
from onnxspec.errors import ModelLoadError, SpecError
from onnxspec.pieces.spec import bind, plan
from onnxspec.pipeline.core import export
from onnxspec.pipeline.loading import load_vocoder
from tests.tiny import CONFIGS, tiny_folder, tiny_model

B, ENC = "batch_size", "encoder_sequence_length"
_TEXT = {0: B, 1: ENC}
# Optimum's names (SpeechT5OnnxConfig); every tensor here also has a batch axis, and the decoder takes prenet_noise
OPTIMUM_IO = {
    "encoder_model.onnx": ({"input_ids": _TEXT}, {"encoder_outputs": _TEXT, "encoder_attention_mask": _TEXT}),
    "decoder_model.onnx": (
        {"output_sequence": {0: B, 1: "decoder_sequence_length"}, "speaker_embeddings": {0: B}, "encoder_outputs": _TEXT,
         "encoder_attention_mask": _TEXT, "prenet_noise": {1: "decoder_sequence_length"}},
        {"output_sequence_out": {0: B, 1: "decoder_sequence_length + one_frame"}, "spectrum": {0: B}, "prob": {0: B}},
    ),
    "decoder_with_past_model.onnx": (
        {"output_sequence": {0: B, 1: "past_decoder_sequence_length + decoder_sequence_length"}, "speaker_embeddings": {0: B},
         "encoder_outputs": _TEXT, "encoder_attention_mask": _TEXT, "prenet_noise": {1: "past_decoder_sequence_length + decoder_sequence_length"}},
        {"output_sequence_out": {0: B, 1: "past_decoder_sequence_length + decoder_sequence_length + one_frame"}, "spectrum": {0: B}, "prob": {0: B}},
    ),
    "decoder_postnet_and_vocoder.onnx": ({"spectrogram": {0: B, 1: "n_spectrums_x_reduction_factor"}}, {"waveform": {0: B, 1: "n_samples"}}),
}


def _files(task: str) -> dict:
    return {g.filename: g for g in plan(bind(spec_for(REGISTRY, "speecht5", task), CONFIGS["speecht5"]()))}


def _cache(prefix: str, parts: tuple[str, ...]) -> set[str]:
    return {f"{prefix}.{i}.{p}.{w}" for i in range(2) for p in parts for w in ("key", "value")}


@pytest.mark.parametrize("task", ["text-to-audio", "text-to-audio-with-past"])
def test_files_names_and_axes(task: str) -> None:
    files = _files(task)
    with_past = task.endswith("-with-past")
    expected = ["encoder_model.onnx", "decoder_model.onnx", *(["decoder_with_past_model.onnx"] if with_past else []), "decoder_postnet_and_vocoder.onnx"]
    assert list(files) == expected
    for name, sub in files.items():
        ins = {t.name: t.dynamic_axes for t in sub.inputs}
        outs = {t.name: t.dynamic_axes for t in sub.outputs}
        want_in, want_out = OPTIMUM_IO[name]
        assert {n: a for n, a in ins.items() if not n.startswith("past_key_values.")} == want_in, name
        assert {n: a for n, a in outs.items() if not n.startswith("present.")} == want_out, name
        past_in = name == "decoder_with_past_model.onnx"
        assert {n for n in ins if n.startswith("past_key_values.")} == (_cache("past_key_values", ("decoder", "encoder")) if past_in else set())
        present = set()
        if name == "decoder_model.onnx" and with_past:
            present = _cache("present", ("decoder", "encoder"))
        elif past_in:
            present = _cache("present", ("decoder",))
        assert {n for n in outs if n.startswith("present.")} == present, name
    assert [t.rank for t in files["decoder_model.onnx"].outputs[:3]] == [3, 3, 2]  # (batch, frames + 1, mel), (batch, rf, mel), (batch, rf)


def test_registered_and_not_refused() -> None:
    assert REGISTRY["speecht5"].tasks == ("text-to-audio", "text-to-audio-with-past")
    assert not any(mt == "speecht5" for mt, _ in UNSUPPORTED)
    assert needs_vocoder(spec_for(REGISTRY, "speecht5", "text-to-audio"))
    assert not needs_vocoder(spec_for(REGISTRY, "musicgen", "text-to-audio"))


def _drawn_by(draws: list[torch.Tensor]):  # torch.bernoulli(x, p) replaced by the given draws, in call order
    def bernoulli(x: torch.Tensor, p: float) -> torch.Tensor:
        draw = draws.pop(0)
        assert draw.shape == x.shape
        return (draw < p).to(x.dtype)

    return bernoulli


def test_prenet_with_its_draws_given_is_the_models(monkeypatch) -> None:
    model = tiny_model("speecht5", "text-to-audio")
    prenet = model.speecht5.decoder.prenet
    rng = torch.Generator().manual_seed(0)
    frames, speaker = torch.randn(2, 5, 8, generator=rng), torch.randn(2, 12, generator=rng)
    noise = torch.rand(2, 5, 16, generator=rng)
    monkeypatch.setattr(torch, "bernoulli", _drawn_by(list(noise.unbind(0))))
    with torch.no_grad():
        expected = prenet(frames, speaker)
        got = _prenet(prenet, frames, speaker, noise)
        other = _prenet(prenet, frames, speaker, torch.rand(2, 5, 16, generator=rng))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert (other - expected).abs().max() > 1e-3  # the draws matter: another draw is another output


def test_export_without_a_vocoder_says_to_pass_one(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"vocoder=PATH \(--vocoder PATH\)"):
        export(tiny_model("speecht5", "text-to-audio"), tmp_path / "out", task="text-to-audio")
    assert not (tmp_path / "out").exists()


def test_a_vocoder_for_another_model_is_refused(tmp_path) -> None:
    with pytest.raises(SpecError, match="no graph of this export runs a vocoder"):
        export(tiny_model("bert", "feature-extraction"), tmp_path / "out", vocoder=tmp_path / "vocoder")


def test_load_vocoder_refuses_a_folder_of_another_model(tmp_path) -> None:
    folder = tiny_folder("bert", "feature-extraction", tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not a vocoder"):
        load_vocoder(folder)
    with pytest.raises(ModelLoadError, match="vocoder: .*no config.json"):
        load_vocoder(tmp_path)
    assert isinstance(T.SpeechT5HifiGan, type)


def test_a_callers_model_has_the_vocoder_for_the_export_only(tmp_path) -> None:
    from onnxspec.errors import ExportError
    from tests.tiny import tiny_vocoder_folder

    model = tiny_model("speecht5", "text-to-audio")
    vocoder = tiny_vocoder_folder(tmp_path / "vocoder")
    seen: list[str] = []

    def stop_after_load(stage: str, detail: str) -> None:
        if stage == "load":
            seen.append(type(getattr(model, "vocoder", None)).__name__)
            raise RuntimeError("stopped after load")

    with pytest.raises(ExportError, match="stopped after load"):
        export(model, tmp_path / "out", task="text-to-audio", vocoder=vocoder, _fault=stop_after_load)
    assert seen == ["SpeechT5HifiGan"]  # attached while the export runs
    assert not hasattr(model, "vocoder")  # and gone after


def test_streamed_weights_are_refused_for_an_export_with_a_vocoder(tmp_path) -> None:
    from tests.tiny import tiny_vocoder_folder

    folder = tiny_folder("speecht5", "text-to-audio", tmp_path / "model")
    vocoder = tiny_vocoder_folder(tmp_path / "vocoder")
    with pytest.raises(SpecError, match="runs a vocoder.*leave --stream-weights out"):
        export(folder, tmp_path / "out", task="text-to-audio", vocoder=vocoder, stream_weights=True)
    assert not (tmp_path / "out").exists()


def test_cli_without_a_vocoder_exits_2_naming_the_flag(tmp_path, capsys) -> None:
    from onnxspec.cli import main

    folder = tiny_folder("speecht5", "text-to-audio", tmp_path / "model")
    code = main(["export", "--model", folder, "--task", "text-to-audio-with-past", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "pass its folder as --vocoder PATH" in err and "vocoder=" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
