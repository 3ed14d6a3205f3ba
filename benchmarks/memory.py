"""Peak memory of a validated export of big models, against their fp32 weight bytes, per stage.

    .venv/bin/python benchmarks/memory.py --label after               # llama-1b and gemma-3-270m, this checkout
    .venv/bin/python benchmarks/memory.py --label before --code DIR   # the same, importing onnxspec from DIR
    .venv/bin/python benchmarks/memory.py --render                    # rewrite results/memory.md from memory.json

Each model is exported once, in its own process (``memory_worker.py``: ``export(folder, out)``
with validation, the default settings), one model at a time. Measured: the process's peak RSS
(``wait4``), the peak RSS during each pipeline stage as a thread in the worker samples it every
20 ms, with its anonymous (``RssAnon``) and file-backed (``RssFile``: memory-mapped checkpoint
and external data) parts, the validation stage split where onnxruntime opens its session, and,
where the pipeline reports it, its own per-stage figure (``ExportReport.stage_memory``). Each is
divided by the model's fp32 weight bytes (4 bytes per parameter, tied weights once). Results
accumulate in ``results/memory.json`` under the label; ``results/memory.md`` is rendered from it
(runs measured before ``memory_worker.py`` existed have the sampled RSS only).

Models: ``llama-1b`` (random, 953 M parameters, built by ``models.py``) and ``gemma-3-270m``
(the real checkpoint ``scripts/real_models.py`` installs: a Q4_K_M GGUF file, dequantized to
fp32 when loaded).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import HERE, PROJECT_PYTHON, ROOT, WORK, child_env, run_child  # noqa: E402

RESULTS = os.path.join(HERE, "results")
TASK = "text-generation-with-past"
MODELS = ("llama-1b", "gemma-3-270m")


def _gemma_folder() -> tuple[str, int]:
    """The gemma-3-270m folder and its fp32 weight bytes (4 x the elements of the GGUF's tensors)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import gguf
    import real_models

    folder = real_models.real_model_folder("gemma3")
    path = os.path.join(folder, real_models.gguf_file("gemma3") or "")
    return folder, 4 * sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


def _llama_folder() -> tuple[str, int]:
    folder = os.path.join(WORK, "models", "llama-1b")
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "models.py"), "llama-1b", folder], timeout=3600)
    if not res.ok:
        raise RuntimeError(f"building llama-1b failed:\n{res.tail()}")
    return folder, int(res.last_json()["weight_bytes"])


def _commit(code: str) -> str:
    got = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip() if got.returncode == 0 else "unknown"


def measure(name: str, code: str) -> dict[str, Any]:
    folder, weights = _gemma_folder() if name == "gemma-3-270m" else _llama_folder()
    out = os.path.join(WORK, "out", "memory", name)
    shutil.rmtree(out, ignore_errors=True)
    env = {**child_env(), "PYTHONPATH": code}
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "memory_worker.py"), folder, TASK, out], env=env, timeout=7200)
    shutil.rmtree(out, ignore_errors=True)
    entry: dict[str, Any] = {"model": name, "folder": folder, "weight_bytes": weights, "seconds": res.seconds,
                             "peak_rss": res.peak_rss, "ratio": res.peak_rss / weights, "ok": res.ok}
    if not res.ok:
        entry["error"] = res.tail(25)
        return entry
    got = res.last_json()
    peaks = got["peaks"]
    entry.update(passed=got["passed"], export_seconds=got["seconds"], sampled={k: v["VmRSS"] for k, v in peaks.items()},
                 anon={k: v["RssAnon"] for k, v in peaks.items()}, file={k: v["RssFile"] for k, v in peaks.items()},
                 reported=got.get("report_stage_memory") or {})
    return entry


def render(results: dict[str, Any]) -> str:
    lines = ["# Peak memory of a validated export vs fp32 weight bytes", "",
             "Written by `benchmarks/memory.py` (see its docstring for what is measured). Peak RSS is the whole",
             "process's (`wait4`); per stage, `sampled` is the worker's 20 ms sampling thread and `reported` the",
             "pipeline's own figure (`ExportReport.stage_memory`: the kernel's high-water mark when the stage set a",
             "new peak, else a 10 ms sampling thread). Ratios are x the model's fp32 weight bytes. Where measured,",
             "`anonymous` and `file-backed` are the sampled peaks of the two parts of the resident set (`RssAnon`,",
             "`RssFile`: pages of memory-mapped files, the checkpoint's and the graph's external data);",
             "`(onnxruntime)` is the validation from the moment onnxruntime opens its session.", ""]
    for label, run in results.items():
        lines += [f"## {label}", "", f"- measured {run['date']} at onnxspec commit {run['commit']}"
                  + (f"; {run['note']}" if run.get("note") else ""), ""]
        lines += ["| model | fp32 weights | peak RSS | x weights | export s | passed |", "|---|---|---|---|---|---|"]
        for m in run["models"].values():
            lines.append(f"| {m['model']} | {m['weight_bytes'] / 2**30:.2f} GiB | {m['peak_rss'] / 2**30:.2f} GiB | **{m['ratio']:.2f}x** | "
                         f"{m.get('export_seconds', m['seconds']):.0f} | {m.get('passed', 'FAILED')} |")
        for m in run["models"].values():
            if not m.get("sampled"):
                continue
            split = "anon" in m
            lines += ["", f"Per stage, {m['model']}:", "", "| stage | sampled | x weights | reported | x weights |"
                      + (" anonymous | file-backed |" if split else ""), "|---|---|---|---|---|" + ("---|---|" if split else "")]
            for stage, value in m["sampled"].items():
                rep = m["reported"].get(stage.removesuffix(" (onnxruntime)")) if not stage.endswith("(onnxruntime)") else None
                lines.append(f"| {stage.split(':/')[0]} | {value / 2**30:.2f} GiB | {value / m['weight_bytes']:.2f}x | "
                             + (f"{rep / 2**30:.2f} GiB | {rep / m['weight_bytes']:.2f}x |" if rep else "- | - |")
                             + (f" {m['anon'][stage] / 2**30:.2f} GiB | {m['file'][stage] / 2**30:.2f} GiB |" if split else ""))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="the name these figures are kept under (e.g. before, after)")
    parser.add_argument("--code", default=ROOT, help="the onnxspec source tree to measure (default: this checkout)")
    parser.add_argument("--note", default="", help="a line saying what differs in this run")
    parser.add_argument("--commit", help="the commit --code holds, when it is not a git checkout (a `git archive` copy)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--render", action="store_true", help="only rewrite memory.md from memory.json")
    args = parser.parse_args()
    path = os.path.join(RESULTS, "memory.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    if not args.render:
        if not args.label:
            parser.error("--label is required to measure")
        run = results.setdefault(args.label, {"models": {}})
        run.update(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), commit=args.commit or _commit(args.code), note=args.note)
        for name in args.models:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            run["models"][name] = entry = measure(name, os.path.abspath(args.code))
            print(f"{name}: peak {entry['peak_rss'] / 2**30:.2f} GiB = {entry['ratio']:.2f}x the fp32 weights", file=sys.stderr, flush=True)
            with open(path, "w") as f:
                json.dump(results, f, indent=1)
    with open(os.path.join(RESULTS, "memory.md"), "w") as f:
        f.write(render(results))


if __name__ == "__main__":
    main()
