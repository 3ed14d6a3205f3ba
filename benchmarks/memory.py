"""Peak memory of a validated export of big models, against their fp32 weight bytes, per stage.

    .venv/bin/python benchmarks/memory.py --label after               # llama-1b and gemma-3-270m, this checkout
    .venv/bin/python benchmarks/memory.py --label before --code DIR   # the same, importing onnxspec from DIR
    .venv/bin/python benchmarks/memory.py --limits                    # the memory an export needs: onnxspec and Optimum in memory groups
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

``--limits``: the memory an export cannot do without. RSS counts the pages of memory-mapped files
(the checkpoint, the graph's external data), which the kernel can take back whenever it needs
them, so peak RSS overstates what an export needs. Here each validated export runs in a cgroup v1
memory group (``huge.memory_group``, ``huge.measured``) limited to a fraction of the model's fp32
weight bytes (:data:`LIMITS`): the group counts the page cache its processes read and write, and
reclaims it under pressure, so the smallest limit under which the export completes is the memory
it needs. Both tools run the command line a user runs, with validation, on the same safetensors
folder (``models.py``: llama-1b, and gemma-3-270m's real weights saved as fp32 safetensors):
``onnxspec export --model DIR --task TASK OUT`` and ``optimum-cli export onnx --model DIR --task
TASK OUT``, one run at a time, the folder's pages dropped from the page cache before each run
(``posix_fadvise``) so that every run reads them into its own group. Per run: completed or how it
failed (exit code, the group's ``memory.failcnt`` and ``oom_kill`` count, the kernel's OOM lines
naming the group), wall and CPU seconds, peak RSS (``wait4``) with its anonymous and file-backed
parts (sampled every 0.2 s), and the group's ``memory.max_usage_in_bytes``. A run still going
after ``--timeout`` seconds (default 480, 4-5x an unlimited run) is killed and counted as not
completed: under a tight limit the group reclaims the pages of the weights the run reads over and
over, and the run crawls (its major faults say so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import HERE, PROJECT_CLI, PROJECT_PYTHON, ROOT, WORK, child_env, run_child  # noqa: E402

RESULTS = os.path.join(HERE, "results")
TASK = "text-generation-with-past"
MODELS = ("llama-1b", "gemma-3-270m")
LIMITS = {"onnxspec": (0.5, 0.75, 1.0, 1.5), "optimum": (0.5, 0.75, 1.0, 1.5, 2.0, 2.5)}
"""Memory group limits per tool, x the model's fp32 weight bytes (Optimum's peak RSS was ~2.2x)."""


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


def _bench_folder(name: str) -> tuple[str, int]:
    """The benchmark's safetensors folder of ``name`` (built by ``models.py`` if missing) and its fp32 weight bytes."""
    folder = os.path.join(WORK, "models", name)
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "models.py"), name, folder], timeout=3600)
    if not res.ok:
        raise RuntimeError(f"building {name} failed:\n{res.tail()}")
    return folder, int(res.last_json()["weight_bytes"])


def _drop_cached(folder: str) -> None:
    """Take the folder's files out of the page cache, so that the next run reads them into its own group."""
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _group_file(group: str, name: str) -> str:
    with open(os.path.join(group, name)) as f:
        return f.read().strip()


def limited(tool: str, name: str, folder: str, weights: int, fraction: float, timeout: float) -> dict[str, Any]:
    """One validated export by ``tool`` of ``folder`` in a memory group limited to ``fraction`` x ``weights``."""
    import signal

    import huge
    import peer

    out = os.path.join(WORK, "out", "memory-limits", f"{tool}-{name}")
    shutil.rmtree(out, ignore_errors=True)
    if tool == "onnxspec":
        argv = [PROJECT_CLI, "export", "--model", folder, "--task", TASK, out, "--overwrite"]
    else:
        argv = [os.path.join(os.path.dirname(peer.ensure()), "optimum-cli"), "export", "onnx", "--model", folder, "--task", TASK, out]
    limit = int(fraction * weights)
    group_name = f"onnxspec-memory-{tool}-{name}-{fraction:g}x"
    group = huge.memory_group(group_name, limit)
    if not group:
        raise RuntimeError("no cgroup v1 memory group could be made under /sys/fs/cgroup/memory (run as root on a cgroup v1 machine)")
    _drop_cached(folder)

    def kill_group() -> None:  # the run's own processes, by their ids
        for pid in _group_file(group, "cgroup.procs").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    timer = threading.Timer(timeout, kill_group)
    timer.start()
    try:
        run = huge.measured(argv, cgroup=group)
        timed_out = not timer.is_alive()
        timer.cancel()
        oom = dict(line.split() for line in _group_file(group, "memory.oom_control").splitlines())
        stat = dict(line.split() for line in _group_file(group, "memory.stat").splitlines())
        run.update(max_usage_in_bytes=int(_group_file(group, "memory.max_usage_in_bytes")),
                   failcnt=int(_group_file(group, "memory.failcnt")), oom_kill=int(oom.get("oom_kill", 0)),
                   major_faults=int(stat.get("total_pgmajfault", 0)))
        with open(os.path.join(group, "memory.force_empty"), "w") as f:
            f.write("0")  # the pages this run left in the page cache go before the group does
    finally:
        timer.cancel()
        try:
            os.rmdir(group)
        except OSError:
            pass
    kernel = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
    run["oom_lines"] = [line for line in kernel if f"/{group_name}," in line or f"/{group_name} " in line][-3:]
    report: dict[str, Any] = {}
    if tool == "onnxspec" and os.path.exists(os.path.join(out, "onnxspec_report.json")):
        with open(os.path.join(out, "onnxspec_report.json")) as f:
            report = json.load(f)
    text = "\n".join(t for _, t in run["lines"])
    if run["exit_code"] == 0:
        if tool == "onnxspec":
            how = "completed, validation passed" if report.get("passed") else "completed, validation FAILED"
        else:
            how = ("completed, validation warned (outputs beyond Optimum's tolerance)" if "succeeded with the warning" in text
                   else "completed, validation passed")
    elif timed_out:
        how = f"killed after the {timeout:g} s timeout"
    elif run["oom_kill"] or run["oom_lines"]:
        how = "OOM-killed in the group"
    else:
        how = f"failed (exit code {run['exit_code']})"
    run.update(tool=tool, model=name, fraction=fraction, limit=limit, weight_bytes=weights, completed=run["exit_code"] == 0,
               outcome=how, command=" ".join(argv).replace(ROOT + "/", "").replace(WORK + "/", "WORK/"),
               tail=[t for _, t in run["lines"][-12:]])
    del run["lines"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + ".onnxspec-failed", ignore_errors=True)
    return run


def _last_stage(tail: list[str]) -> str:
    """The last pipeline stage an onnxspec run printed as done (its ``✓ <stage>`` lines), or ``""``."""
    import re

    done = [m.group(1) for line in tail if (m := re.match(r"\s*\S\s+(resolve|load|dummies|trace|check|validate|write)\b", line))]
    return done[-1] if done else ""


def render_limits(limits: dict[str, Any]) -> list[str]:
    lines = ["## memory needed: exports in a limited memory group", "",
             f"- last measured {limits['date']} at onnxspec commit {limits['commit']}" + (f"; {limits['note']}" if limits.get("note") else ""),
             *([f"- earlier rows: {limits['earlier']}"] if limits.get("earlier") else []),
             "- each validated export in a cgroup v1 memory group limited to a fraction of the model's fp32 weight bytes "
             "(the group counts the page cache it reads and reclaims it under pressure); both tools on the same safetensors "
             "folder, one run at a time, the folder's pages dropped from the page cache first; `max usage` is the group's "
             "`memory.max_usage_in_bytes`, `anon` / `file` the sampled peaks of RssAnon / RssFile, `failcnt` how often the group hit "
             "its limit and had to reclaim, `major faults` the pages its processes read back from disk (many: the run thrashes, "
             "its working set of weights no longer fits beside its anonymous memory); libraries already in the page cache are "
             "charged to whoever read them first, so peak RSS can exceed `max usage`", ""]
    runs = list(limits["runs"].values())
    for name in dict.fromkeys(r["model"] for r in runs):
        mine = sorted((r for r in runs if r["model"] == name), key=lambda r: (r["tool"], r["fraction"]))
        weights = mine[0]["weight_bytes"]
        lines += [f"{name} (fp32 weights {weights / 2**30:.2f} GiB):", "",
                  "| tool | limit | outcome | wall s | CPU s | peak RSS | anon | file | max usage | failcnt | major faults | measured at |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in mine:
            stage = _last_stage(r["tail"]) if r["tool"] == "onnxspec" and not r["completed"] else ""
            outcome = r["outcome"] + (f" (last stage done: {stage})" if stage else "")
            lines.append(f"| {r['tool']} | {r['fraction']:g}x = {r['limit'] / 2**30:.2f} GiB | {outcome} | {r['seconds']:.0f} | "
                         f"{r['cpu_seconds']:.0f} | {r['peak_rss'] / 2**30:.2f} GiB ({r['peak_rss'] / weights:.2f}x) | "
                         f"{r['peak_rss_anon'] / 2**30:.2f} GiB | {r['peak_rss_file'] / 2**30:.2f} GiB | "
                         f"{r['max_usage_in_bytes'] / 2**30:.2f} GiB | {r['failcnt']} | {r.get('major_faults', '-')} | "
                         f"{r.get('commit', limits.get('first_commit', '-'))} |")
        lines.append("")
        for tool in dict.fromkeys(r["tool"] for r in mine):
            done = [r["fraction"] for r in mine if r["tool"] == tool and r["completed"]]
            lines.append(f"- {tool}: " + (f"completes from {min(done):g}x ({min(done) * weights / 2**30:.2f} GiB) of the fp32 weights"
                                          if done else "completed under none of these limits"))
        lines.append("")
    return lines


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
        if label == "limits":
            continue
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
    if results.get("limits"):
        lines += render_limits(results["limits"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="the name these figures are kept under (e.g. before, after)")
    parser.add_argument("--code", default=ROOT, help="the onnxspec source tree to measure (default: this checkout)")
    parser.add_argument("--note", default="", help="a line saying what differs in this run")
    parser.add_argument("--commit", help="the commit --code holds, when it is not a git checkout (a `git archive` copy)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--render", action="store_true", help="only rewrite memory.md from memory.json")
    parser.add_argument("--limits", action="store_true", help="the memory an export needs: onnxspec and Optimum in memory groups "
                        "limited to fractions of the fp32 weight bytes (the 'memory needed' section)")
    parser.add_argument("--tools", nargs="+", choices=tuple(LIMITS), default=list(LIMITS), help="with --limits: which exporters")
    parser.add_argument("--fractions", nargs="+", type=float, help="with --limits: these limits (x the fp32 weights) instead of LIMITS")
    parser.add_argument("--timeout", type=float, default=480, help="with --limits: seconds before a run is killed")
    args = parser.parse_args()
    path = os.path.join(RESULTS, "memory.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    if args.limits:
        limits = results.setdefault("limits", {"runs": {}})
        limits.update(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), commit=args.commit or _commit(ROOT), note=args.note)
        for name in args.models:
            folder, weights = _bench_folder(name)
            for tool in args.tools:
                for fraction in args.fractions or LIMITS[tool]:
                    print(f"{tool} {name} in {fraction:g}x ...", file=sys.stderr, flush=True)
                    r = limited(tool, name, folder, weights, fraction, args.timeout)
                    r.update(date=limits["date"], commit=limits["commit"])  # rows kept from earlier runs keep theirs
                    limits["runs"][f"{tool} {name} {fraction:g}x"] = r
                    print(f"  {r['outcome']}: {r['seconds']:.0f} s, peak RSS {r['peak_rss'] / 2**30:.2f} GiB, "
                          f"max usage {r['max_usage_in_bytes'] / 2**30:.2f} GiB", file=sys.stderr, flush=True)
                    with open(path, "w") as f:
                        json.dump(results, f, indent=1)
    elif not args.render:
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
