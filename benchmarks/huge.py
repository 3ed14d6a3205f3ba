"""A decoder whose fp32 weights exceed this machine's memory, exported and validated by streaming.

    .venv/bin/python benchmarks/huge.py                 # build the checkpoint, export fp32, fp16, then try Optimum
    .venv/bin/python benchmarks/huge.py --only fp16     # one step (build, fp32, fp16, optimum), the rest kept
    .venv/bin/python benchmarks/huge.py --render        # rewrite results/huge.md from results/huge.json

The model is a random Llama of Llama-2-7B's shape (hidden 4096, 32 heads, intermediate 11008,
vocabulary 32000, untied head) with ``--layers`` decoder layers: 30 by default (6.33 B parameters,
25.3 GB of fp32 weights against 24.7 GB of RAM), because the checkpoint and the fp32 export must fit
on this machine's shared disk with 8 GB to spare; 32 is Llama-2-7B (6.74 B, 26.95 GB). ``build`` writes it shard by shard as safetensors (~2 GB
shards, ``model.safetensors.index.json``, ``config.json``), never holding more than one shard:
the model is built on the ``meta`` device for its parameter names and shapes, and each tensor is
filled with seeded normal values of the config's ``initializer_range`` (norm weights are ones),
stored as fp8 (:data:`STORED`, for the disk).

``fp32`` and ``fp16`` run the command line a user runs, in a child process::

    onnxspec export --model FOLDER --task text-generation-with-past --stream-weights OUT [--dtype fp16]

with full validation (three shape sets against PyTorch, float64 bounds), in a cgroup v1 memory
group of ``--export-limit-gb`` (16 GiB) so that the machine's other work keeps the rest, and
measure its wall and CPU time, its peak RSS (``wait4``), and its anonymous and file-backed
resident memory (``RssAnon``, ``RssFile`` of ``/proc/<pid>/status``, sampled every 0.2 s); the
stages' times come from the lines the command prints, timestamped as they arrive, and the errors,
bounds and the runtime that ran the graph (the fp16 graph's fp32 weight copies do not fit here:
onnxruntime's low-memory session, unoptimized) from the report it writes. Each output folder is
deleted once measured (disk).

``optimum`` runs ``optimum-cli export onnx`` on the same folder last, in a memory cgroup limited to
``--optimum-limit-gb`` (cgroup v1, ``/sys/fs/cgroup/memory``) so that it cannot push the machine
into the out-of-memory killer; without a cgroup it runs under ``prlimit --as``. What it did is
recorded: exit code, time, peak RSS, the end of its output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import HERE, PROJECT_CLI, ROOT, WORK, child_env, machine  # noqa: E402

RESULTS = os.path.join(HERE, "results")
JSON_PATH = os.path.join(RESULTS, "huge.json")
MD_PATH = os.path.join(RESULTS, "huge.md")
TASK = "text-generation-with-past"
SHARD_BYTES = 2 * 10**9
STEPS = ("build", "fp32", "fp16", "optimum")


def llama_config(layers: int) -> Any:
    import transformers

    return transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers, num_attention_heads=32,
        num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.02,
        architectures=["LlamaForCausalLM"],
    )


STORED = "float8_e4m3fn"
"""The checkpoint's dtype: fp8 (1 byte a weight) so that the checkpoint (6.7 GB) and the fp32 export
(27 GB) fit on this machine's disk together with room to spare; an fp16 checkpoint (13.5 GB) would
leave under 8 GB free. The export reads and upcasts it the same way, one tensor at a time."""


def build(folder: str, layers: int, seed: int = 0) -> dict[str, Any]:
    """Write the random checkpoint into ``folder``, one shard at a time."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from onnxspec.build.streamed import params_on_meta

    start = time.perf_counter()
    stored = getattr(torch, STORED)
    config = llama_config(layers)
    with params_on_meta():
        model = transformers.LlamaForCausalLM(config)
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    del model
    tmp = folder + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        n = torch.empty((), dtype=stored).element_size() * int(torch.Size(shape).numel())
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    weight_map: dict[str, str] = {}
    total = 0
    params = 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            index = [n for n, _ in shapes].index(name)
            if name.endswith("norm.weight"):
                value = torch.ones(shape, dtype=stored)
            else:
                gen = torch.Generator().manual_seed(seed * 100_003 + index)
                value = (torch.randn(shape, generator=gen) * config.initializer_range).to(stored)
            tensors[name] = value
            weight_map[name] = file
            total += value.nbytes
            params += value.numel()
        save_file(tensors, os.path.join(tmp, file), metadata={"format": "pt"})
        del tensors
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return {
        "layers": layers, "parameters": params, "stored_dtype": STORED, "checkpoint_bytes": total,
        "fp16_bytes": 2 * params, "fp32_bytes": 4 * params, "shards": len(shards),
        "seconds": round(time.perf_counter() - start, 1),
    }


def fp16_copy(folder: str, dest: str) -> dict[str, Any]:
    """The checkpoint again with its tensors in fp16, shard by shard: Optimum's transformers (4.57)
    keeps an fp8 checkpoint's dtype whatever ``--dtype`` says and fails tracing it, so it is measured
    on this copy, the dtype real 7B checkpoints ship in."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    start = time.perf_counter()
    tmp = dest + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    total = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), framework="pt") as f:
                tensors = {k: f.get_tensor(k).to(torch.float16) for k in f.keys()}
            total += sum(t.nbytes for t in tensors.values())
            save_file(tensors, os.path.join(tmp, name), metadata={"format": "pt"})
            del tensors
        else:
            shutil.copy(os.path.join(folder, name), tmp)
    with open(os.path.join(tmp, "model.safetensors.index.json")) as f:
        index = json.load(f)
    index["metadata"]["total_size"] = total
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return {"bytes": total, "seconds": round(time.perf_counter() - start, 1)}


def _status(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    found[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return found


def memory_group(name: str, limit: int) -> str:
    """A cgroup v1 memory group limited to ``limit`` bytes (its path), or ``""`` when one cannot be made."""
    path = f"/sys/fs/cgroup/memory/{name}"
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
    except OSError:
        return ""
    return path


def measured(argv: list[str], *, env: dict[str, str] | None = None, cgroup: str = "") -> dict[str, Any]:
    """Run ``argv``: wall time, peak RSS, peak RssAnon / RssFile, its output lines timestamped."""
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    if cgroup:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for key, value in _status(proc.pid).items():
                peaks[key] = max(peaks[key], value)
            time.sleep(0.2)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            for part in line.replace("\r", "\n").splitlines():
                if part.strip():
                    lines.append((round(time.perf_counter() - start, 1), part.rstrip()))

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=read, daemon=True)]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    for t in threads:
        t.join(timeout=5)
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss": usage.ru_maxrss * 1024,
        "peak_rss_anon": peaks["RssAnon"],
        "peak_rss_file": peaks["RssFile"],
        "lines": lines,
    }


def _stage_times(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """When each pipeline stage started, from the stage lines the command prints."""
    stages = []
    for at, text in lines:
        m = re.match(r"\s*(?:[^\w\s]\s*)?(resolve|load|dummies|trace|check|validate|write)\b", text)
        if m and (not stages or stages[-1][0] != m.group(1)):
            stages.append((m.group(1), at))
    return stages


EXPORT_LIMIT = 16 * 2**30
"""The exports run in a memory group of this size too (``--export-limit-gb``): a step that would take
more (onnxruntime's default CPU session copying fp16 weights to fp32 did, 24 GB) is killed alone, not
by the machine's OOM killer, and the machine's other work keeps the rest."""


def export_run(folder: str, dtype: str, extra: list[str] | None = None, limit: int = EXPORT_LIMIT) -> dict[str, Any]:
    out = os.path.join(WORK, "out", f"huge-{dtype}")
    shutil.rmtree(out, ignore_errors=True)
    argv = [PROJECT_CLI, "export", "--model", folder, "--task", TASK, "--stream-weights", out, "--overwrite"]
    if dtype != "fp32":
        argv += ["--dtype", dtype]
    argv += extra or []
    group = memory_group(f"onnxspec-huge-{dtype}", limit)
    try:
        run = measured(argv, cgroup=group)
        run["memory_group"] = f"cgroup v1, limit {limit / 2**30:g} GiB" if group else "none"
        if group:
            for name in ("memory.max_usage_in_bytes", "memory.failcnt"):
                with open(os.path.join(group, name)) as f:
                    run[name] = int(f.read().strip())
    finally:
        if group:
            try:
                os.rmdir(group)
            except OSError:
                pass
    run["command"] = " ".join(argv).replace(ROOT + "/", "")
    run["stages"] = _stage_times(run["lines"])
    report_path = os.path.join(out, "onnxspec_report.json")
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        data = os.path.join(out, "model.onnx.data")
        run["files"] = {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out))}
        run["data_bytes"] = os.path.getsize(data) if os.path.exists(data) else 0
        run["report"] = {
            "seconds": report.get("seconds"),
            "source": report.get("source"),
            "stage_memory": report.get("stage_memory"),
            "graphs": [
                {
                    "filename": g["filename"], "backend": g["backend"], "runtime": g.get("runtime"), "export_seconds": g["export_seconds"],
                    "validate_seconds": g["validate_seconds"], "float64_reference": g.get("float64_reference"),
                    "checks": [
                        {k: c.get(k) for k in ("output", "shape_set", "torch_shape", "max_abs", "error", "bound", "criterion", "passed")}
                        for c in g["checks"]
                    ],
                }
                for g in report["graphs"]
            ],
        }
    else:
        run["files"] = {}
    run["tail"] = [text for _, text in run["lines"][-25:]]
    del run["lines"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + ".onnxspec-failed", ignore_errors=True)
    return run


def optimum_run(folder: str, limit_gb: float, extra: list[str] | None = None) -> dict[str, Any]:
    sys.path.insert(0, HERE)
    import peer

    python = peer.ensure()
    cli = os.path.join(os.path.dirname(python), "optimum-cli")
    out = os.path.join(WORK, "out", "huge-optimum")
    shutil.rmtree(out, ignore_errors=True)
    argv = [cli, "export", "onnx", "--model", folder, "--task", TASK, *(extra or []), out]
    limit = int(limit_gb * 2**30)
    cgroup = "/sys/fs/cgroup/memory/onnxspec-huge-optimum"
    how = ""
    try:
        os.makedirs(cgroup, exist_ok=True)
        with open(os.path.join(cgroup, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        how = f"in a cgroup v1 memory group limited to {limit_gb:g} GiB (memory.limit_in_bytes)"
    except OSError as e:
        cgroup = ""
        argv = ["prlimit", f"--as={limit}", "--", *argv]
        how = f"under prlimit --as={limit_gb:g} GiB (no memory cgroup: {e})"
    env = child_env()
    try:
        run = measured(argv, env=env, cgroup=cgroup)
        if cgroup:
            for name in ("memory.max_usage_in_bytes", "memory.failcnt"):
                with open(os.path.join(cgroup, name)) as f:
                    run[name] = int(f.read().strip())
            with open(os.path.join(cgroup, "memory.oom_control")) as f:
                run["oom_control"] = f.read().strip().replace("\n", "; ")
    finally:
        if cgroup:
            try:
                os.rmdir(cgroup)
            except OSError:
                pass
    run["how"] = how
    run["command"] = " ".join(argv).replace(ROOT + "/", "")
    run["tail"] = [text for _, text in run["lines"][-25:]]
    del run["lines"]
    run["wrote"] = sorted(os.listdir(out)) if os.path.isdir(out) else []
    shutil.rmtree(out, ignore_errors=True)
    return run


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB ({n / 2**30:.2f} GiB)"


def render(results: dict[str, Any]) -> str:
    out = ["# A decoder larger than RAM: streamed export and validation", "",
           "Written by `benchmarks/huge.py` (see its docstring for what is measured).", ""]
    m = results.get("machine", {})
    model = results.get("build", {})
    out += [f"- measured {results.get('when', '?')} at onnxspec commit {results.get('commit', '?')}; machine: "
            f"{m.get('nproc', '?')} CPUs, MemTotal {_gb(results.get('mem_total'))}, no swap; shared with other work",
            f"- model: random Llama, Llama-2-7B's shape with {model.get('layers')} layers: {model.get('parameters', 0) / 1e9:.2f} B parameters, "
            f"{model.get('stored_dtype')} checkpoint {_gb(model.get('checkpoint_bytes'))} in {model.get('shards')} shards, "
            f"fp16 weights {_gb(model.get('fp16_bytes'))}, fp32 weights {_gb(model.get('fp32_bytes'))} "
            f"(> MemTotal); checkpoint written in {model.get('seconds')} s", ""]
    for dtype in [k for k in results if k in ("fp32", "fp16") or k.startswith(("fp32 ", "fp16 "))]:
        run = results.get(dtype)
        if not run:
            continue
        rep = run.get("report", {})
        out += [f"## {dtype}", ""]
        other = results.get("build" + dtype[4:]) if dtype[4:] else None
        if other:
            out += [f"Model: {other['layers']} layers, {other['parameters'] / 1e9:.2f} B parameters, fp32 weights "
                    f"{_gb(other['fp32_bytes'])}, {other['stored_dtype']} checkpoint {_gb(other['checkpoint_bytes'])} "
                    f"written in {other['seconds']} s.", ""]
        group = run.get("memory_group", "none")
        out += [f"`{run['command']}`" + (f", run in a memory group ({group})" if group != "none" else ""), "",
                "| exit | wall s | CPU s | peak RSS | peak RssAnon | peak RssFile | model.onnx.data |", "|---|---|---|---|---|---|---|",
                f"| {run['exit_code']} | {run['seconds']} | {run.get('cpu_seconds', '-')} | {_gb(run['peak_rss'])} | "
                f"{_gb(run['peak_rss_anon'])} | {_gb(run['peak_rss_file'])} | {_gb(run.get('data_bytes'))} |", ""]
        if "memory.max_usage_in_bytes" in run:
            out += [f"memory group: max usage {_gb(run['memory.max_usage_in_bytes'])} (page cache included), "
                    f"failcnt {run['memory.failcnt']}", ""]
        if run.get("stages"):
            stages = run["stages"]
            out += ["Stages (the command prints a stage's line when it is done: the time it ended, and since the "
                    "previous one ended; the first includes starting Python and the imports):", "",
                    "| stage | ended at s | seconds |", "|---|---|---|"]
            for i, (name, at) in enumerate(stages):
                since = at - (stages[i - 1][1] if i else 0.0)
                out.append(f"| {name} | {at} | {since:.1f} |")
            out.append("")
        if rep.get("stage_memory"):
            out += ["Peak RSS per stage (the pipeline's own figure):", "", "| stage | peak RSS |", "|---|---|"]
            out += [f"| {k} | {_gb(v)} |" for k, v in rep["stage_memory"].items()]
            out.append("")
        for g in rep.get("graphs", []):
            checks = g["checks"]
            worst = max(checks, key=lambda c: c["error"] / c["bound"] if c["bound"] else float("inf"), default=None)
            out += [f"{g['filename']}: traced with {g['backend']} in {g['export_seconds']:.1f} s, validated in "
                    f"{g['validate_seconds']:.1f} s by {g.get('runtime') or 'onnxruntime'}, float64 reference: "
                    f"{g.get('float64_reference') or '-'}; {sum(c['passed'] for c in checks)} of {len(checks)} checks passed"
                    + (f", worst error/bound {worst['error'] / worst['bound']:.3g} ({worst['output']}, {worst['shape_set']})" if worst else ""), "",
                    "| output | shape set | shape | max abs | error | bound | passed |", "|---|---|---|---|---|---|---|"]
            for c in g["checks"]:
                out.append(f"| {c['output']} | {c['shape_set']} | {tuple(c['torch_shape'] or ())} | {c['max_abs']:.3g} | "
                           f"{c['error']:.3g} | {c['bound']:.3g} | {c['passed']} |")
            out.append("")
        if run["exit_code"] != 0:
            out += ["The command failed; its output ends with:", "", "```", *run["tail"], "```", ""]
    for key in [k for k in results if k.startswith("optimum")]:
        opt = results[key]
        out += [f"## Optimum: {key.replace('optimum', '', 1).strip() or 'the checkpoint as it is'}", "", f"`{opt['command']}`, run {opt['how']}", "",
                "| exit | wall s | peak RSS | peak RssAnon | cgroup max usage | files written |", "|---|---|---|---|---|---|",
                f"| {opt['exit_code']} | {opt['seconds']} | {_gb(opt['peak_rss'])} | {_gb(opt['peak_rss_anon'])} | "
                f"{_gb(opt.get('memory.max_usage_in_bytes'))} | {', '.join(opt['wrote']) or 'none'} |", "",
                f"cgroup: failcnt {opt.get('memory.failcnt', '-')}, oom_control: {opt.get('oom_control', '-')}", "",
                "Its output ends with:", "", "```", *opt["tail"], "```", ""]
    if results.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=30)
    default_folder = os.path.join(WORK, "models", "llama-7b-shape")
    parser.add_argument("--folder", default=default_folder)
    parser.add_argument("--only", nargs="+", choices=STEPS)
    parser.add_argument("--optimum-limit-gb", type=float, default=12.0)
    parser.add_argument("--export-limit-gb", type=float, default=EXPORT_LIMIT / 2**30,
                        help="the memory group the onnxspec exports run in (cgroup v1)")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--suffix", default="", help="store the step's results under its name plus this suffix")
    parser.add_argument("--optimum-fp16-copy", action="store_true", help="run Optimum on an fp16 copy of the checkpoint")
    parser.add_argument("--optimum-dtype", help="--dtype passed to optimum-cli (fp32: load the weights as fp32)")
    parser.add_argument("--sequence-length", type=int, help="trace length passed to the exports (shorter: less compute "
                        "in the trace and in the validation's longest shape set, which is 7 tokens longer)")
    parser.add_argument("--keep-checkpoint", action="store_true", help="do not delete the checkpoint at the end")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if os.path.exists(JSON_PATH):
        with open(JSON_PATH) as f:
            results = json.load(f)
    if args.render:
        with open(MD_PATH, "w") as f:
            f.write(render(results))
        return
    steps = args.only or STEPS

    def save() -> None:
        results["when"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        results["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        results["machine"] = machine()
        with open("/proc/meminfo") as f:
            results["mem_total"] = int(f.readline().split()[1]) * 1024
        os.makedirs(RESULTS, exist_ok=True)
        with open(JSON_PATH, "w") as f:
            json.dump(results, f, indent=2)
        with open(MD_PATH, "w") as f:
            f.write(render(results))

    if "build" in steps or not os.path.exists(os.path.join(args.folder, "model.safetensors.index.json")):
        print("building the checkpoint ...", flush=True)
        results["build" + args.suffix] = build(args.folder, args.layers)
        save()
    for dtype in ("fp32", "fp16"):
        if dtype in steps:
            need = (results.get("build" + args.suffix, results["build"])[f"{dtype}_bytes"] if args.folder == default_folder else 0) + 8 * 10**9
            free = shutil.disk_usage(WORK).free
            if free < need:
                sys.exit(f"{dtype}: {free / 1e9:.1f} GB of disk free, the export needs {need / 1e9:.1f} GB (with 8 GB to spare)")
            print(f"exporting {dtype} ...", flush=True)
            extra = [] if args.sequence_length is None else ["--sequence-length", str(args.sequence_length)]
            results[dtype + args.suffix] = export_run(args.folder, dtype, extra, int(args.export_limit_gb * 2**30))
            save()
    if "optimum" in steps:
        print("Optimum ...", flush=True)
        folder = args.folder
        if args.optimum_fp16_copy:
            folder = args.folder + "-fp16"
            results["fp16_copy"] = fp16_copy(args.folder, folder)
        results["optimum" + args.suffix] = optimum_run(
            folder, args.optimum_limit_gb, [] if args.optimum_dtype is None else ["--dtype", args.optimum_dtype])
        save()
        if args.optimum_fp16_copy:
            shutil.rmtree(args.folder + "-fp16", ignore_errors=True)
    if not args.keep_checkpoint and not args.only:
        shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
