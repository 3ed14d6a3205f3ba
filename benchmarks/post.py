"""Quantize and optimize exported models, and measure what each transformation gives and costs.

For each model: export it (fp32, validated), then run each transformation of ``onnxspec quantize``
and ``onnxspec optimize`` on the folder, and measure the graph's size before and after,
onnxruntime's latency before and after (CPU provider, one thread, median of repeated runs on one
fixed input), and the agreement with PyTorch the transformation was judged by (the worst cosine,
the top-1 and greedy agreement; for lossless ones the worst error / bound). The transformations
run with thresholds of 0 so every figure is measured; the table says which would pass the
default thresholds. Each row says whether the exported graph's token lookup and head read one
tied weight (onnxspec writes a tied embedding once), which int8-dynamic quantizes with one scale
set for both (int8 leaves the lookup in float32); ``--untied`` adds an untied copy of each tied decoder (the head's weight a copy of the
embedding: the same function, two weights) to compare.

    .venv/bin/python benchmarks/post.py            # tiny bert and tiny llama (about a minute)
    .venv/bin/python benchmarks/post.py --large    # also bert-base and gpt2 sized random models (minutes)
    .venv/bin/python benchmarks/post.py --models gpt2-small smollm2-135m --untied
        # also the benchmark's folders (benchmarks/models.py: gpt2-small random, smollm2-135m real), and untied copies

Each model is measured in a process of its own, one at a time (a full-size model's process peaks
at 2.3-3.7 GB: quantization holds the float32 graph and its result, the judge the PyTorch model).
Results: ``benchmarks/results/post.md`` and ``post.json`` (``--out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from onnxspec import export  # noqa: E402
from onnxspec.post.agreement import DEFAULTS, Thresholds  # noqa: E402
from onnxspec.post.optimize import optimize  # noqa: E402
from onnxspec.post.quantize import quantize  # noqa: E402

sys.path.insert(0, HERE)
import models as bench_models  # noqa: E402
from common import WORK  # noqa: E402

ROW = "post-row: "
"""The prefix of a measured row on a child process's standard output."""
ANYTHING = Thresholds(cosine=0.0, top1=0.0, greedy=0.0)
TRANSFORMS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("int8", {"quantize": "int8"}),
    ("int8-dynamic", {"quantize": "int8-dynamic"}),
    ("int4", {"quantize": "int4"}),
    ("level basic", {"level": "basic"}),
    ("level all", {"level": "all"}),
    ("fp16", {"fp16": True}),
)


TEXT_TASKS = ("feature-extraction", "text-classification", "text-generation", "text-generation-with-past")
"""The tasks whose graphs :func:`_feed` can feed (token inputs, and a cache)."""


def _save(model: torch.nn.Module, folder: str) -> str:
    model.eval().save_pretrained(folder)
    return folder


def _benchmark_model(name: str) -> tuple[str, str, str]:
    """(name, task, folder) of the benchmark's model ``name`` (built by benchmarks/models.py, reused)."""
    folder = os.path.join(WORK, "models", name)
    meta = bench_models.build(name, folder)
    kind = "real" if meta.get("size") == "real" else "random"
    return f"{name} ({kind})", meta["task"], folder


def _untied_copy(folder: str, destination: str) -> str:
    """A copy of the causal LM in ``folder`` whose head has its own weight, equal to the embedding
    table: the same function, exported as two weights instead of one tied weight."""
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    head, table = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight is table.weight, f"{folder}: the head and the embedding do not share a weight"
    head.weight = torch.nn.Parameter(table.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    _save(model, destination)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if os.path.isfile(os.path.join(folder, name)) and not os.path.isfile(os.path.join(destination, name)):
            shutil.copy(os.path.join(folder, name), destination)
    del model
    reloaded = T.AutoModelForCausalLM.from_pretrained(destination, dtype=torch.float32)
    assert reloaded.get_output_embeddings().weight is not reloaded.get_input_embeddings().weight, destination
    return destination


def _tied(path: str) -> bool:
    """Whether a weight of the graph at ``path`` is read both by a lookup (``Gather``) and by a
    product (``MatMul``, ``Gemm``): a tied embedding written once."""
    from onnxspec.build.graphs import all_nodes

    model = onnx.load(path, load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    looked_up = {n.input[0] for n in all_nodes(model.graph) if n.op_type == "Gather"} & weights
    multiplied = {i for n in all_nodes(model.graph) if n.op_type in ("MatMul", "Gemm") for i in n.input} & weights
    return bool(looked_up & multiplied)


def _models(work: str, large: bool) -> list[tuple[str, str, str]]:
    """(name, task, model folder) of the models measured."""
    torch.manual_seed(0)
    tiny_llama = T.LlamaConfig(vocab_size=100, max_position_embeddings=64, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, intermediate_size=37, pad_token_id=0,
                               bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    tiny_bert = T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                             max_position_embeddings=64)
    found = [
        ("tiny bert (classifier)", "text-classification", _save(T.BertForSequenceClassification(tiny_bert), f"{work}/tiny-bert")),
        ("tiny llama (tied)", "text-generation-with-past", _save(T.LlamaForCausalLM(tiny_llama), f"{work}/tiny-llama")),
    ]
    if large:
        found += [
            ("bert-base sized (random)", "text-classification",
             _save(T.BertForSequenceClassification(T.BertConfig()), f"{work}/bert-base")),
            ("gpt2 sized (random)", "text-generation-with-past",
             _save(T.GPT2LMHeadModel(T.GPT2Config(bos_token_id=1, eos_token_id=2)), f"{work}/gpt2")),
        ]
    return found


def _length(folder: str) -> int:
    """128 tokens, or half the model's positions when it has fewer (the tiny models: 64)."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return min(128, config.get("max_position_embeddings", config.get("n_positions", 256)) // 2)


def _feed(session: onnxruntime.InferenceSession, decoder: bool, length: int) -> dict[str, np.ndarray]:
    """One fixed input: a sequence of ``length`` tokens (encoders), or one new token after ``length`` cached (decoders)."""
    rng = np.random.default_rng(0)
    feed = {}
    past = length if decoder else 0
    seq = 1 if decoder else length
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            shape = [1 if k == 0 else past if k == 2 else d for k, d in enumerate(i.shape)]
            feed[i.name] = rng.normal(size=shape).astype(np.float32)
        elif i.name == "input_ids":
            feed[i.name] = rng.integers(3, 90, size=(1, seq), dtype=np.int64)
        elif i.name == "attention_mask":
            feed[i.name] = np.ones((1, past + seq), np.int64)
        elif i.name == "position_ids":
            feed[i.name] = np.arange(past, past + seq, dtype=np.int64)[None]
        else:  # token_type_ids
            feed[i.name] = np.zeros((1, seq), np.int64)
    return feed


def _session(path: str) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _latencies(before: str, after: str, decoder: bool, length: int, runs: int) -> tuple[float, float]:
    """Median milliseconds of one run of each graph, one thread, after two warm-up runs; the two
    graphs run in turn, so a load change on the shared machine falls on both."""
    sessions = [_session(before), _session(after)]
    feeds = [_feed(s, decoder, length) for s in sessions]
    times: list[list[float]] = [[], []]
    for k in range(runs + 2):
        for i, (session, feed) in enumerate(zip(sessions, feeds)):
            t0 = time.perf_counter()
            session.run(None, feed)
            if k >= 2:
                times[i].append(time.perf_counter() - t0)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def _figures(report: Any) -> dict[str, Any]:
    g = report.graphs[0]
    if report.judged_by == "agreement":
        worst = {}
        for metric in ("cosine", "top1", "greedy"):
            values = [m.value for m in g.measures if m.metric == metric]
            if values:
                worst[metric] = min(values)
        return {"judged_by": "agreement", **worst}
    ratio = max(c.error / c.bound for c in g.checks)
    return {"judged_by": "lossless", "worst_error_over_bound": ratio, "checks_passed": all(c.passed for c in g.checks)}


def _passes(row: dict[str, Any]) -> bool:
    """Whether a row's figures reach today's default thresholds (``agreement.DEFAULTS``)."""
    if row["judged_by"] == "lossless":
        return bool(row["checks_passed"])
    default = DEFAULTS["fp16" if row["transform"] == "fp16" else row["transform"].split("-")[0]]
    return all(row.get(k, 1.0) >= getattr(default, k) for k in ("cosine", "top1", "greedy"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also bert-base and gpt2 sized random models")
    text = sorted(m.name for m in bench_models.ALL.values() if m.task in TEXT_TASKS)
    parser.add_argument("--models", nargs="+", default=[], choices=text, metavar="NAME",
                        help="also these benchmark models (benchmarks/.work/models/NAME, built when missing): " + ", ".join(text))
    parser.add_argument("--untied", action="store_true",
                        help="also an untied copy of each tied decoder of --models (the head a copy of the embedding)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency (default 20)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="folder of post.md and post.json")
    parser.add_argument("--work", default=os.path.join(HERE, ".work", "post"), help="scratch folder (removed first)")
    parser.add_argument("--render", action="store_true", help="only write post.md again from post.json (today's thresholds)")
    parser.add_argument("--measure", nargs=3, metavar=("LABEL", "TASK", "FOLDER"), help=argparse.SUPPRESS)  # one child process
    parser.add_argument("--untie-into", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        with open(os.path.join(args.out, "post.json"), encoding="utf-8") as f:
            done = json.load(f)
        args.runs, args.large = done["runs"], done.get("large", True)
        args.models, args.untied = done.get("models", []), done.get("untied", False)
        with open(os.path.join(args.out, "post.md"), "w", encoding="utf-8") as f:
            f.write(_markdown(done["rows"], done["measured"], done["versions"], args))
        return 0
    if args.measure:
        label, task, folder = args.measure
        if args.untie_into:
            folder = _untied_copy(folder, args.untie_into)
        for row in _measure(label, task, folder, args.work, args.runs):
            print(ROW + json.dumps(row), flush=True)
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    measured: list[tuple[str, str, str, str]] = [(*m, "") for m in _models(args.work, args.large)]
    for name in args.models:
        label, task, folder = _benchmark_model(name)
        measured.append((label, task, folder, ""))
        if args.untied and task.startswith("text-generation"):
            with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
                tied = json.load(f).get("tie_word_embeddings", True)
            if tied:
                measured.append((f"{label.split(' (')[0]} untied copy", task, folder, f"{args.work}/{name}-untied"))
    rows = []
    for label, task, folder, untie_into in measured:
        # one process per model, one at a time, so that one model's memory is not added to the next's
        argv = [sys.executable, os.path.abspath(__file__), "--measure", label, task, folder, "--work", args.work,
                "--runs", str(args.runs)] + (["--untie-into", untie_into] if untie_into else [])
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
            for line in child.stdout:  # type: ignore[union-attr]
                if line.startswith(ROW):
                    rows.append(json.loads(line[len(ROW):]))
                    print(json.dumps(rows[-1]), flush=True)
        if child.returncode != 0:
            print(f"{label}: measuring failed (exit {child.returncode}); nothing is written", file=sys.stderr)
            return 1
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "transformers": T.__version__}
    with open(os.path.join(args.out, "post.json"), "w", encoding="utf-8") as f:
        json.dump({"measured": stamp, "versions": versions, "runs": args.runs, "large": args.large, "models": args.models,
                   "untied": args.untied, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "post.md"), "w", encoding="utf-8") as f:
        f.write(_markdown(rows, stamp, versions, args))
    return 0


def _measure(name: str, task: str, folder: str, work: str, runs: int) -> Iterator[dict[str, Any]]:
    """Export the model in ``folder``, run every transformation on the export and measure each (a row each)."""
    decoder = task.endswith("-with-past")
    exported = f"{work}/{os.path.basename(folder)}-onnx"
    export(folder, exported, task=task)
    base = os.path.join(exported, "model.onnx")
    tied = _tied(base)
    length = _length(folder)
    for label, how in TRANSFORMS:
        out = f"{exported}-{label.replace(' ', '-')}"
        t0 = time.perf_counter()
        if "quantize" in how:
            report = quantize(exported, out, method=how["quantize"], thresholds=ANYTHING)
        else:
            report = optimize(exported, out, thresholds=ANYTHING if how.get("fp16") else None, **how)
        seconds = time.perf_counter() - t0
        g = report.graphs[0]
        before, after = _latencies(base, os.path.join(out, "model.onnx"), decoder, length, runs)
        yield {
            "model": name, "task": task, "tied": tied, "transform": label, "bytes_before": g.bytes_before, "bytes_after": g.bytes_after,
            "ms_before": before, "ms_after": after, "tokens": length,
            "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), **_figures(report),
        }
        shutil.rmtree(out)
    shutil.rmtree(exported)


def _peak_rss_mb() -> int:
    """This process's peak resident memory so far, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _command(args: argparse.Namespace) -> str:
    return ("`.venv/bin/python benchmarks/post.py" + (" --large" if args.large else "")
            + (" --models " + " ".join(args.models) if args.models else "") + (" --untied" if args.untied else "") + "`")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else "yes" if flag else "no"


def _markdown(rows: list[dict[str, Any]], stamp: str, versions: dict[str, str], args: argparse.Namespace) -> str:
    lines = [
        "# Quantize and optimize: size, latency, agreement with PyTorch",
        "",
        f"Measured {stamp} by {_command(args)} "
        f"(onnxruntime {versions['onnxruntime']}, torch {versions['torch']}, transformers {versions['transformers']}), "
        "on 2 shared CPU cores. Latency: onnxruntime CPU provider, one thread, the two graphs run in turn, median of "
        f"{args.runs} runs each: encoders one sequence of 128 tokens, decoders one new token after 128 cached (the tiny models, "
        "with 64 positions: 32). "
        "Agreement: the worst value over the export's validation shape sets (cosine, top-1) and greedy decoding "
        "of 4 prompts for 8 tokens; lossless transformations: the worst error / bound of the export's own validation. "
        "'tied': the graph's token lookup and head read one weight (a tied embedding, written once), which int8-dynamic "
        "quantizes for both (int8: the head only, the lookup stays float32); int8-dynamic is the former int8 (MatMulInteger, "
        "activations quantized at run time), int8 is weight-only (MatMulNBits) with the down_proj layers in float32; an 'untied copy' is the same model with the head's weight a copy of the embedding. "
        "'passes' compares with the default thresholds ("
        + "; ".join(f"{k}: cosine {t.cosine}, top-1 {t.top1}, greedy {t.greedy}" for k, t in DEFAULTS.items()) + ").",
        "",
        "| model | tied | transform | size before | size after | ms before | ms after | cosine | top-1 | greedy | error / bound | passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def f(key: str) -> str:
            return f"{r[key]:.4f}" if key in r else "–"
        lines.append(
            f"| {r['model']} | {_yes(r.get('tied'))} | {r['transform']} | {_mb(r['bytes_before'])} | {_mb(r['bytes_after'])} | {r['ms_before']:.2f} | "
            f"{r['ms_after']:.2f} | {f('cosine')} | {f('top1')} | {f('greedy')} | "
            f"{r['worst_error_over_bound']:.3f} | " if "worst_error_over_bound" in r else
            f"| {r['model']} | {_yes(r.get('tied'))} | {r['transform']} | {_mb(r['bytes_before'])} | {_mb(r['bytes_after'])} | {r['ms_before']:.2f} | "
            f"{r['ms_after']:.2f} | {f('cosine')} | {f('top1')} | {f('greedy')} | – | "
        )
        lines[-1] += ("yes" if _passes(r) else "**no**") + " |"
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
