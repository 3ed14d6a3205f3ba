"""SpeechT5 exported from a model folder with ``--task text-to-audio-with-past`` and ``--vocoder``
(encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx,
decoder_postnet_and_vocoder.onnx), validated against PyTorch, then driven by onnxruntime alone
through generate_speech's loop; the waveform must be ``model.generate_speech(...,
vocoder=...)``'s when both draw the same prenet dropout masks.

``generate_speech`` stops on the stop probability, which makes the length data-dependent: here its
threshold (10) is above the largest sum of ``reduction_factor`` (2) probabilities, so it runs to its
``maxlenratio`` cap, ``int(8 tokens * 1.5 / 2) = 6`` steps, and the onnxruntime loop runs those 6.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers as T

from onnxspec.cli import main
from onnxspec.pieces.cache_names import is_cache_input
from tests.tiny import tiny_folder, tiny_vocoder_folder

pytestmark = pytest.mark.integration

FILES = ["encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_postnet_and_vocoder.onnx"]
STEPS, TOKENS, MAXLENRATIO, THRESHOLD = 6, 8, 1.5, 10.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("speecht5")
    folder = tiny_folder("speecht5", "text-to-audio", root / "model")
    vocoder = tiny_vocoder_folder(root / "vocoder")
    out = root / "onnx"
    code = main(["export", "--model", folder, "--task", "text-to-audio-with-past", "--vocoder", vocoder, str(out)])
    assert code == 0
    model = T.SpeechT5ForTextToSpeech.from_pretrained(folder).eval()
    return out, model, T.SpeechT5HifiGan.from_pretrained(vocoder).eval()


def _noise(seed: int, layers: int, units: int) -> list[torch.Tensor]:
    """The prenet's draws of every step: step ``s`` runs the prenet over ``s + 1`` frames."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(layers, step + 1, units, generator=gen) for step in range(STEPS)]


def _pytorch_speech(model, vocoder, ids, speaker, noise, monkeypatch) -> np.ndarray:
    """``generate_speech`` with ``torch.bernoulli`` (the prenet's dropout, its only draw) reading ``noise``."""
    draws = [layer for step in noise for layer in step.unbind(0)]

    def bernoulli(x: torch.Tensor, p: float) -> torch.Tensor:
        draw = draws.pop(0)
        assert draw.shape == x.shape
        return (draw < p).to(x.dtype)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "bernoulli", bernoulli)
        with torch.no_grad():
            waveform = model.generate_speech(ids, speaker, threshold=THRESHOLD, maxlenratio=MAXLENRATIO, vocoder=vocoder)
    assert not draws  # every step drew, and no more
    return waveform.numpy()


def _onnx_speech(folder, ids, speaker, noise) -> tuple[np.ndarray, list[np.ndarray]]:
    """The four files in onnxruntime: encoder once, the first step, later steps with the cache, the vocoder."""
    sessions = {name: ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"]) for name in FILES}
    encoded, mask = sessions["encoder_model.onnx"].run(None, {"input_ids": ids})
    sequence = np.zeros((1, 1, 8), dtype=np.float32)  # the first frame: zeros, as generate_speech starts
    spectra, probs, past = [], [], {}
    for step in range(STEPS):
        name = "decoder_model.onnx" if step == 0 else "decoder_with_past_model.onnx"
        session = sessions[name]
        feed = {"output_sequence": sequence, "speaker_embeddings": speaker, "encoder_outputs": encoded, "encoder_attention_mask": mask,
                "prenet_noise": noise[step].numpy(), **past}
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        sequence = outputs["output_sequence_out"]
        spectra.append(outputs["spectrum"])
        probs.append(outputs["prob"])
        fresh = {n.replace("present.", "past_key_values.", 1): v for n, v in outputs.items() if n.startswith("present.")}
        past = {**past, **fresh}  # the cross-attention cache comes from the first step only
        wanted = {i.name for i in sessions["decoder_with_past_model.onnx"].get_inputs() if is_cache_input(i.name)}
        assert wanted <= set(past)
    spectrogram = np.concatenate(spectra, axis=1)  # (1, steps * reduction_factor, mel), the steps' frames in order
    (waveform,) = sessions["decoder_postnet_and_vocoder.onnx"].run(None, {"spectrogram": spectrogram})
    return waveform[0], probs


def test_export_validates_the_four_files(exported) -> None:
    out, _, _ = exported
    assert all((out / name).is_file() for name in FILES)
    assert not (out / "decoder_model_merged.onnx").exists()


def test_onnxruntime_speaks_as_generate_speech(exported, monkeypatch) -> None:
    out, model, vocoder = exported
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, model.config.vocab_size, (1, TOKENS), generator=gen)  # no pad token (1): an unmasked text
    speaker = torch.randn(1, model.config.speaker_embedding_dim, generator=gen)
    layers, units = model.config.speech_decoder_prenet_layers, model.config.speech_decoder_prenet_units
    noise = _noise(0, layers, units)
    expected = _pytorch_speech(model, vocoder, ids, speaker, noise, monkeypatch)
    got, probs = _onnx_speech(out, ids.numpy(), speaker.numpy(), noise)
    assert expected.shape == got.shape == (STEPS * model.config.reduction_factor * 4,)  # 4 samples per frame
    assert np.abs(expected).max() > 1e-2  # a waveform, not silence
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    print(f"speecht5: onnxruntime's waveform vs generate_speech's: max abs difference {np.abs(got - expected).max():.2e}")
    assert max(float(p.sum()) for p in probs) < THRESHOLD  # the cap, not the stop probability, ended generate_speech
    # the draws steer the speech: other draws give another waveform, in onnxruntime as in PyTorch
    other, _ = _onnx_speech(out, ids.numpy(), speaker.numpy(), _noise(1, layers, units))
    assert np.abs(other - got).max() > 100 * 1e-5  # (7.6e-3 here, of a waveform peaking at 0.13)


def test_validate_rechecks_every_file_with_the_vocoder_given(exported, tmp_path, capsys) -> None:
    """``onnxspec validate --vocoder PATH`` re-checks all four files, the vocoder's included; without
    the flag it stops before loading the model, naming the flag; another vocoder's waveform disagrees."""
    out, _, _ = exported
    folder, vocoder = out.parent / "model", out.parent / "vocoder"
    code = main(["validate", str(out), "--model", str(folder)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "pass its folder as --vocoder PATH" in err and "vocoder=" not in err and "Traceback" not in err
    assert "validate" not in err.replace("Re-validating", "")  # refused before any graph ran
    code = main(["validate", str(out), "--model", str(folder), "--vocoder", str(vocoder)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert all(name in captured.err for name in FILES)  # each file's stage line: every graph was run
    other = tiny_vocoder_folder(tmp_path / "other-vocoder", seed=2)
    code = main(["validate", str(out), "--model", str(folder), "--vocoder", other])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "decoder_postnet_and_vocoder.onnx: output 'waveform' disagrees with PyTorch" in err
