"""onnxspec measured against Optimum's ONNX exporter and a plain torch.onnx.export, in one run.

    .venv/bin/python benchmarks/run.py --full    # everything; writes benchmarks/results/latest.{md,json}
    .venv/bin/python benchmarks/run.py --smoke   # one tiny model, one run, no peer (the test suite runs this)

Every comparison is a ratio against a baseline measured interleaved in the same run (run i of
both sides saw the same machine load), reported as the ratio of medians with min/median/max of
each side. See benchmarks/README.md.
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
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import HERE, PROJECT_CLI, PROJECT_PYTHON, ROOT, WORK, ratio, run_child, summary, target  # noqa: E402
from models import BASE, BIG, MERGED, REAL, TINY, BenchModel  # noqa: E402

TARGETS = {
    "e2e_cli_time": 0.8,  # full-size and real models (issue 10): validation's compute dominates
    "e2e_cli_time_tiny": 0.9,  # tiny models, where imports dominate
    "pipeline_overhead": 1.1,
    "graph_latency": 1.0,
    "peak_memory_vs_weights": 1.5,
    "merged_vs_three_files": 1.3,
}
EXTERNAL_DATA_LIMIT = 2 * 10**9  # protobuf's 2 GB cap: above it the weights must live in a .data file


def log(msg: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model folders and commands


def model_dir(m: BenchModel) -> str:
    return os.path.join(WORK, "models", m.name)


def build_model(m: BenchModel) -> dict[str, Any]:
    """Build (or reuse) the folder of ``m`` in a child process; its RSS is not counted anywhere."""
    folder = model_dir(m)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "models.py"), m.name, folder], timeout=3600)
    if not res.ok:
        raise RuntimeError(f"building the model folder {m.name} failed:\n{res.tail()}")
    return res.last_json()


INSTALLED_CLI: str | None = None
"""The console script of onnxspec installed as a user installs it (:mod:`installed`), once the
full run has made it; until then (and in --smoke) the development venv's."""


def onnxspec_cli(m: BenchModel, out: str) -> list[str]:
    """How a user exports with onnxspec: the console script (or the pipeline, before it existed)."""
    if INSTALLED_CLI:
        return [INSTALLED_CLI, "export", "--model", model_dir(m), "--task", m.task, out]
    cli = os.path.join(ROOT, "onnxspec", "cli")
    if (os.path.exists(cli + ".py") or os.path.isdir(cli)) and os.path.exists(PROJECT_CLI):  # a module, or (now) a package
        return [PROJECT_CLI, "export", "--model", model_dir(m), "--task", m.task, out]
    code = "import sys; from onnxspec.pipeline.core import export; export(sys.argv[1], sys.argv[3], task=sys.argv[2])"
    return [PROJECT_PYTHON, "-c", code, model_dir(m), m.task, out]


def optimum_cli(m: BenchModel, out: str) -> list[str]:
    import peer

    return [peer.CLI, "export", "onnx", "--model", model_dir(m), "--task", m.task, out]


def interleaved(run: int, with_peer: bool) -> list[str]:
    """The sides measured in run ``run``: onnxspec first on even runs, the peer first on odd ones,
    so neither side always pays (or profits from) the machine's state left by the other."""
    sides = ["onnxspec", "optimum"] if with_peer else ["onnxspec"]
    return sides if run % 2 == 0 else sides[::-1]


def fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    return path


def out_dir(side: str, m: BenchModel) -> str:
    return os.path.join(WORK, "out", side, m.name)


# ---------------------------------------------------------------- the four measurements


def measure_e2e(models: list[BenchModel], runs: int, with_peer: bool) -> dict[str, Any]:
    """Whole-process wall time and peak RSS of each CLI, interleaved model by model, run by run."""
    raw: dict[str, dict[str, dict[str, list]]] = {m.name: {"onnxspec": _empty(), "optimum": _empty()} for m in models}
    for r in range(runs):
        for m in models:
            for side in interleaved(r, with_peer):
                out = fresh(out_dir(side, m))
                argv = onnxspec_cli(m, out) if side == "onnxspec" else optimum_cli(m, out)
                res = run_child(argv)
                _record(raw[m.name][side], res)
                log(f"e2e run {r + 1}/{runs} {m.name:48s} {side:8s} {res.seconds:6.1f} s {res.peak_rss / 2**20:6.0f} MiB"
                    + ("" if res.ok else f"  FAILED (exit {res.returncode})"))
    return {name: _pair(sides, with_peer) for name, sides in raw.items()}


def measure_inproc(models: list[BenchModel], runs: int, with_peer: bool) -> dict[str, Any]:
    """Seconds inside onnxspec's ``export`` vs Optimum's ``main_export`` (both validating; each in a
    fresh process, imports done before the clock starts)."""
    import peer

    raw = {m.name: {"onnxspec": _empty(), "optimum": _empty()} for m in models}
    for r in range(runs):
        for m in models:
            for side in interleaved(r, with_peer):
                out = fresh(out_dir(side + "-inproc", m))
                if side == "onnxspec":
                    argv = [PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "inproc", model_dir(m), m.task, out]
                else:
                    argv = [peer.PYTHON, os.path.join(HERE, "optimum_worker.py"), model_dir(m), m.task, out]
                res = run_child(argv)
                rec = raw[m.name][side]
                if res.ok:
                    inner = res.last_json()
                    rec["seconds"].append(inner["seconds"])
                    rec["warm_seconds"].append(inner["warm_seconds"])
                    rec["details"].append(inner)
                else:
                    rec["errors"].append(res.tail())
                log(f"in-process run {r + 1}/{runs} {m.name:48s} {side:8s} "
                    + (f"{rec['seconds'][-1]:6.1f} s" if res.ok else f"FAILED (exit {res.returncode})"))
    return {name: _inproc_entry(sides, with_peer) for name, sides in raw.items()}


def _inproc_entry(sides: dict[str, dict[str, list]], with_peer: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        side: {"seconds": summary(v["seconds"]), "warm_seconds": summary(v["warm_seconds"]), "errors": v["errors"], "details": v["details"]}
        for side, v in sides.items()
        if v["seconds"] or v["errors"]
    }
    if with_peer:
        entry["ratio_seconds"] = ratio(sides["onnxspec"]["seconds"], sides["optimum"]["seconds"])
        entry["ratio_warm_seconds"] = ratio(sides["onnxspec"]["warm_seconds"], sides["optimum"]["warm_seconds"])
    return entry


def measure_floor(models: list[BenchModel], runs: int) -> dict[str, Any]:
    """Pipeline export without validation vs the bare torch.onnx.export calls (one warmed process each)."""
    out = {}
    for m in models:
        work = fresh(os.path.join(WORK, "out", "floor", m.name))
        res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "floor", model_dir(m), m.task, work, str(runs)])
        if not res.ok:
            out[m.name] = {"error": res.tail()}
            log(f"floor {m.name}: FAILED\n{res.tail()}")
            continue
        out[m.name] = _floor_entry(res.last_json())
        log(f"floor {m.name:48s} pipeline/raw = {out[m.name]['ratio_pipeline_vs_raw']['median_ratio']:.2f}")
    return out


def _floor_entry(got: dict[str, Any]) -> dict[str, Any]:
    return {
        "graphs": got["graphs"],
        "raw_torch_onnx_export": summary(got["raw_seconds"]),
        "pipeline_no_validation": summary(got["pipeline_seconds"]),
        "pipeline_trace_stage": summary(got["pipeline_trace_seconds"]),
        "pipeline_stage_seconds_median": got.get("pipeline_stage_seconds", {}),
        "ratio_pipeline_vs_raw": ratio(got["pipeline_seconds"], got["raw_seconds"]),
        "ratio_trace_stage_vs_raw": ratio(got["pipeline_trace_seconds"], got["raw_seconds"]),
    }


def _graph_file(folder: str) -> str:
    for name in ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx"):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"no decoder graph in {folder}: {sorted(os.listdir(folder))}")


def measure_graphs(models: list[BenchModel], runs: int, with_peer: bool, smoke: bool) -> dict[str, Any]:
    """Export each model once with both CLIs, then onnxruntime latency and node counts of both graphs."""
    out: dict[str, Any] = {}
    for m in models:
        meta = build_model(m)
        exports = {}
        sides = {"onnxspec": onnxspec_cli} | ({"optimum": optimum_cli} if with_peer else {})
        for side, cli in sides.items():
            folder = fresh(out_dir(side, m))
            res = run_child(cli(m, folder))
            exports[side] = {"seconds": res.seconds, "peak_rss": res.peak_rss, "ok": res.ok, "error": None if res.ok else res.tail()}
            log(f"graph export {m.name} {side}: {res.seconds:.1f} s, {res.peak_rss / 2**20:.0f} MiB" + ("" if res.ok else " FAILED"))
        graphs = {side: _graph_file(out_dir(side, m)) for side in sides if exports[side]["ok"]}
        spec_path = latency_spec(m, graphs, runs, smoke)
        res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "latency", spec_path])
        out[m.name] = _latency_entry(m, meta, exports, graphs, res.last_json() if res.ok else None, res.tail())
    return out


def latency_spec(m: BenchModel, graphs: dict[str, str], runs: int, smoke: bool) -> str:
    """Write the latency worker's job (graphs, thread settings, cases, runs) and return its path."""
    decoder = m.task.startswith("text-generation")
    if smoke:
        cases = [{"batch": 1, "past": 4}] if decoder else [{"batch": 1, "sequence": 16}]
        spec = {"graphs": graphs, "threads": [1], "cases": cases, "runs": 1, "iters": 2}
    elif decoder:
        spec = {"graphs": graphs, "threads": [1, 0], "cases": [{"batch": 1, "past": 128}, {"batch": 8, "past": 128}], "runs": max(runs, 5), "iters": 50}
    else:
        spec = {"graphs": graphs, "threads": [1, 0],
                "cases": [{"batch": 1, "sequence": 128, "iters": 10}, {"batch": 8, "sequence": 128, "iters": 2}],
                "runs": max(runs, 3), "iters": 10}
    path = os.path.join(WORK, "out", f"latency-{m.name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def _latency_entry(m: BenchModel, meta: dict[str, Any], exports: dict[str, Any], graphs: dict[str, str],
                   got: dict[str, Any] | None, error: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": meta, "exports": exports, "files": {k: os.path.relpath(v, WORK) for k, v in graphs.items()}}
    if got is None:
        entry["error"] = error
        log(f"latency {m.name}: FAILED\n{error}")
        return entry
    entry["nodes"] = got["nodes"]
    entry["latency_ms"] = {}
    for case, times in got["latency_ms"].items():
        row = {side: summary(v) for side, v in times.items()}
        if "optimum" in times:
            row["ratio"] = ratio(times["onnxspec"], times["optimum"])
        entry["latency_ms"][case] = row
        log(f"latency {m.name} {case}: " + ", ".join(f"{s} {row[s]['median']:.2f} ms" for s in times))
    return entry


def measure_memory(m: BenchModel, with_peer: bool) -> dict[str, Any]:
    """Peak RSS of one onnxspec CLI export of ``m`` vs its weight bytes (external data checked),
    beside the floors that explain it: loading the model alone, and loading it plus the bare
    torch.onnx.export calls; and Optimum's CLI on the same folder. Each step is its own process."""
    meta = build_model(m)
    floors: dict[str, Any] = {}
    for step in ("load", "raw"):
        work = fresh(os.path.join(WORK, "out", "peak", m.name))
        res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "peak", model_dir(m), m.task, work, step], timeout=5400)
        shutil.rmtree(work, ignore_errors=True)
        floors[step] = {"seconds": res.seconds, "peak_rss": res.peak_rss, "ok": res.ok,
                        "ratio_vs_weights": res.peak_rss / meta["weight_bytes"], "error": None if res.ok else res.tail()}
        log(f"memory {m.name} floor '{step}': {res.seconds:.0f} s, peak {res.peak_rss / 2**30:.2f} GiB" + ("" if res.ok else " FAILED"))
    folder = fresh(out_dir("onnxspec", m))
    res = run_child(onnxspec_cli(m, folder), timeout=5400)
    entry = _memory_entry(meta, res, folder)
    shutil.rmtree(folder, ignore_errors=True)
    entry["floors"] = floors
    if with_peer:
        folder = fresh(out_dir("optimum", m))
        res = run_child(optimum_cli(m, folder), timeout=5400)
        entry["optimum"] = {"seconds": res.seconds, "peak_rss": res.peak_rss, "ok": res.ok,
                            "ratio_vs_weights": res.peak_rss / meta["weight_bytes"], "error": None if res.ok else res.tail(),
                            "files": {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder))} if res.ok else {}}
        log(f"memory {m.name} optimum: {res.seconds:.0f} s, peak {res.peak_rss / 2**30:.2f} GiB" + ("" if res.ok else " FAILED"))
        shutil.rmtree(folder, ignore_errors=True)
    return entry


def measure_memory_stages(m: BenchModel) -> dict[str, Any]:
    """Where the peak of ``m``'s export comes from: peak RSS during each pipeline stage."""
    meta = build_model(m)
    folder = fresh(out_dir("onnxspec-stages", m))
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "stages", model_dir(m), m.task, folder], timeout=5400)
    shutil.rmtree(folder, ignore_errors=True)
    if not res.ok:
        log(f"memory stages {m.name}: FAILED\n{res.tail()}")
        return {"model": meta, "error": res.tail()}
    got = res.last_json()
    got["ratio_vs_weights_by_stage"] = {k: v / meta["weight_bytes"] for k, v in got["peak_rss_by_stage"].items()}
    log(f"memory stages {m.name}: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in got["peak_rss_by_stage"].items()))
    return {"model": meta, **got}


def _memory_entry(meta: dict[str, Any], res: common.ChildResult, folder: str) -> dict[str, Any]:
    m = meta
    entry: dict[str, Any] = {"model": meta, "seconds": res.seconds, "peak_rss": res.peak_rss, "ok": res.ok}
    log(f"memory {m['name']}: {res.seconds:.0f} s, peak {res.peak_rss / 2**30:.2f} GiB, weights {meta['weight_bytes'] / 2**30:.2f} GiB"
        + ("" if res.ok else " FAILED"))
    if not res.ok:
        entry["error"] = res.tail(25)
        return entry
    files = {n: os.path.getsize(os.path.join(folder, n)) for n in sorted(os.listdir(folder))}
    onnx_files = {n: s for n, s in files.items() if n.endswith(".onnx")}
    data_files = {n: s for n, s in files.items() if n.endswith(".data")}
    entry["files"] = files
    entry["ratio_peak_rss_vs_weights"] = res.peak_rss / meta["weight_bytes"]
    entry["external_data"] = {
        "weights_over_2GB": meta["weight_bytes"] > EXTERNAL_DATA_LIMIT,
        "data_files": data_files,
        "largest_onnx_file": max(onnx_files.values(), default=0),
        "ok": (not meta["weight_bytes"] > EXTERNAL_DATA_LIMIT) or (bool(data_files) and max(onnx_files.values(), default=0) < EXTERNAL_DATA_LIMIT),
    }
    return entry


def measure_smoke(m: BenchModel, results: dict[str, Any]) -> None:
    """Every measurement once on one tiny model, onnxspec side only, in as few processes as possible:
    the CLI export (its output also feeds the latency and memory figures), then one worker."""
    meta = results["models"][m.name]
    folder = fresh(out_dir("onnxspec", m))
    res = run_child(onnxspec_cli(m, folder))
    export = {"seconds": res.seconds, "peak_rss": res.peak_rss, "ok": res.ok, "error": None if res.ok else res.tail()}
    rec = _empty()
    _record(rec, res)
    results["e2e"] = {m.name: _pair({"onnxspec": rec}, False)}
    log(f"smoke e2e {m.name}: {res.seconds:.1f} s, {res.peak_rss / 2**20:.0f} MiB" + ("" if res.ok else f" FAILED\n{res.tail()}"))
    if not res.ok:
        raise RuntimeError(f"the onnxspec CLI failed on {m.name}:\n{res.tail()}")
    results["memory"] = _memory_entry(meta, res, folder)
    with open(os.path.join(folder, "onnxspec_report.json")) as f:
        results["versions"]["project"] = json.load(f)["versions"]  # saves a process importing torch
    graphs = {"onnxspec": _graph_file(folder)}
    work = fresh(os.path.join(WORK, "out", "floor", m.name))
    inproc_out = fresh(out_dir("onnxspec-inproc", m))
    jobs = [
        ["inproc", model_dir(m), m.task, inproc_out],
        ["floor", model_dir(m), m.task, work, 1, 0],
        ["latency", latency_spec(m, graphs, 1, True)],
    ]
    jobs_path = os.path.join(WORK, "out", "smoke-jobs.json")
    with open(jobs_path, "w") as f:
        json.dump(jobs, f)
    res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "batch", jobs_path])
    if not res.ok:
        raise RuntimeError(f"the smoke worker failed:\n{res.tail()}")
    inner, floor, lat = res.last_json()
    results["inproc"] = {m.name: _inproc_entry(
        {"onnxspec": {**_empty(), "seconds": [inner["seconds"]], "warm_seconds": [inner["warm_seconds"]], "details": [inner]}}, False)}
    results["floor"] = {m.name: _floor_entry(floor)}
    results["graph"] = {m.name: _latency_entry(m, meta, {"onnxspec": export}, graphs, lat, "")}
    log(f"smoke worker: {res.seconds:.1f} s")


IMPORT_PROBES = {
    "onnxspec": {
        "torch": "import torch",
        "torch + transformers' BERT model module": "import torch, transformers.models.bert.modeling_bert",
        "torch + onnxscript": "import torch, onnxscript",
        "onnxspec.pipeline.core": "import onnxspec.pipeline.core",
        "all a CLI export of BERT loads": "import onnxspec.pipeline.core, onnxruntime, transformers.models.bert.modeling_bert",
    },
    "optimum": {
        "torch": "import torch",
        "torch + transformers' BERT model module": "import torch, transformers.models.bert.modeling_bert",
        "main_export": "from optimum.exporters.onnx import main_export",
        "all a CLI export of BERT loads": "from optimum.exporters.onnx import main_export; import onnxruntime, transformers.models.bert.modeling_bert",
    },
}


def measure_imports(runs: int, with_peer: bool) -> dict[str, Any]:
    """Wall seconds of a process that only imports what each exporter needs: the fixed cost every
    CLI run pays before it does any work (a diagnosis of section 1, no target)."""
    import peer

    times: dict[str, dict[str, list[float]]] = {side: {k: [] for k in probes} for side, probes in IMPORT_PROBES.items()}
    sides = interleaved(0, with_peer)
    for r in range(max(runs, 3)):
        for side in interleaved(r, with_peer):
            python = PROJECT_PYTHON if side == "onnxspec" else peer.PYTHON
            for key, code in IMPORT_PROBES[side].items():
                res = run_child([python, "-c", code])
                if res.ok:
                    times[side][key].append(res.seconds)
    out = {side: {k: summary(v) for k, v in probes.items()} for side, probes in times.items() if side in sides}
    log("imports: " + "; ".join(f"{side} {k} {v['median']:.1f} s" for side, probes in out.items() for k, v in probes.items() if v["median"]))
    return out


MERGED_SIDES = ("merged", "three-file")
"""The two exports the merged section compares: the default (encoder, decoder, decoder with past
and decoder_model_merged.onnx) and ``merged=False`` (the three files written before merged decoders)."""


def measure_merged(models: list[BenchModel], runs: int) -> dict[str, Any]:
    """The seq2seq export with its merged decoder vs the same export without it (``merged=False``),
    both validating, each run a fresh process (``onnxspec_worker.py merged``), the two sides
    interleaved run by run (the side that goes first alternates). Seconds inside ``export``
    (imports excluded) and the whole process's wall time; the files each side wrote."""
    raw = {m.name: {side: {"seconds": [], "process_seconds": [], "errors": [], "details": []} for side in MERGED_SIDES} for m in models}
    metas = {m.name: build_model(m) for m in models}
    for r in range(runs):
        for m in models:
            order = list(MERGED_SIDES) if r % 2 == 0 else list(MERGED_SIDES[::-1])
            for side in order:
                out = fresh(out_dir("onnxspec-" + side, m))
                res = run_child([PROJECT_PYTHON, os.path.join(HERE, "onnxspec_worker.py"), "merged", model_dir(m), m.task, out,
                                 "1" if side == "merged" else "0"])
                rec = raw[m.name][side]
                if res.ok:
                    inner = res.last_json()
                    rec["seconds"].append(inner["seconds"])
                    rec["process_seconds"].append(res.seconds)
                    rec["details"].append(inner)
                else:
                    rec["errors"].append(res.tail())
                log(f"merged run {r + 1}/{runs} {m.name:36s} {side:10s} "
                    + (f"{rec['seconds'][-1]:6.1f} s in export, {res.seconds:6.1f} s process" if res.ok else f"FAILED (exit {res.returncode})"))
    return {name: _merged_entry(metas[name], sides) for name, sides in raw.items()}


def _merged_entry(meta: dict[str, Any], sides: dict[str, dict[str, list]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": meta}
    for side, rec in sides.items():
        details = rec["details"]
        entry[side] = {
            "seconds": summary(rec["seconds"]),
            "process_seconds": summary(rec["process_seconds"]),
            "merge_stages_seconds": summary([d["merge_stages_seconds"] for d in details]),
            "stage_seconds_median": {k: statistics.median(d["stage_seconds"].get(k, 0.0) for d in details)
                                     for k in (details[0]["stage_seconds"] if details else {})},
            "files": details[-1]["files"] if details else {},
            "passed": all(d["passed"] for d in details),
            "errors": rec["errors"],
        }
    m, t = sides["merged"], sides["three-file"]
    entry["ratio_seconds"] = ratio(m["seconds"], t["seconds"])
    entry["ratio_process_seconds"] = ratio(m["process_seconds"], t["process_seconds"])
    files = entry["merged"]["files"]
    if "decoder_model_merged.onnx" in files and "decoder_model.onnx" in files:
        entry["merged_file_vs_decoder_model"] = files["decoder_model_merged.onnx"] / files["decoder_model.onnx"]
    onnx_bytes = {side: sum(v for k, v in entry[side]["files"].items() if k.endswith((".onnx", ".onnx.data", ".data"))) for side in sides}
    entry["onnx_bytes"] = onnx_bytes
    return entry


def _empty() -> dict[str, list]:
    return {"seconds": [], "warm_seconds": [], "peak_rss": [], "errors": [], "details": []}


def _record(rec: dict[str, list], res: common.ChildResult) -> None:
    if res.ok:
        rec["seconds"].append(res.seconds)
        rec["peak_rss"].append(res.peak_rss)
    else:
        rec["errors"].append(res.tail())


def _pair(sides: dict[str, dict[str, list]], with_peer: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for side, rec in sides.items():
        if rec["seconds"] or rec["errors"]:
            entry[side] = {"seconds": summary(rec["seconds"]), "peak_rss": summary(rec["peak_rss"]), "errors": rec["errors"]}
    if with_peer:
        entry["ratio_seconds"] = ratio(sides["onnxspec"]["seconds"], sides["optimum"]["seconds"])
        entry["ratio_peak_rss"] = ratio(sides["onnxspec"]["peak_rss"], sides["optimum"]["peak_rss"])
    return entry


# ---------------------------------------------------------------- versions, targets, writing


def project_versions() -> dict[str, str]:
    code = "import json; from onnxspec.pipeline.core import versions; print(json.dumps(versions()))"
    out = subprocess.run([PROJECT_PYTHON, "-c", code], capture_output=True, text=True, check=True, env=common.child_env()).stdout
    versions = json.loads(out.strip().splitlines()[-1])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        versions["onnxspec_commit"] = commit
    except OSError:
        pass
    return versions


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each product target with the measured value and MET / MISSED (by how much)."""
    out: dict[str, Any] = {}
    for name, e in results.get("e2e", {}).items():
        if "ratio_seconds" in e:
            limit = TARGETS["e2e_cli_time_tiny" if name in {m.name for m in TINY} else "e2e_cli_time"]
            out[f"e2e CLI time vs Optimum: {name}"] = target(e["ratio_seconds"]["median_ratio"], limit)
    for name, e in results.get("floor", {}).items():
        if "ratio_pipeline_vs_raw" in e:
            out[f"pipeline export (no validation) vs raw torch.onnx.export: {name}"] = target(
                e["ratio_pipeline_vs_raw"]["median_ratio"], TARGETS["pipeline_overhead"])
    for name, e in results.get("graph", {}).items():
        for case, row in e.get("latency_ms", {}).items():
            if "ratio" in row:
                out[f"graph latency vs Optimum: {name} {case}"] = target(row["ratio"]["median_ratio"], TARGETS["graph_latency"])
    for name, e in results.get("merged", {}).items():
        if "ratio_seconds" in e:
            out[f"export with merged decoder vs three-file export: {name}"] = target(e["ratio_seconds"]["median_ratio"], TARGETS["merged_vs_three_files"])
    mem = results.get("memory")
    if mem and mem.get("ok"):
        out[f"peak RSS vs weight bytes: {mem['model']['name']}"] = target(mem["ratio_peak_rss_vs_weights"], TARGETS["peak_memory_vs_weights"])
    return out


def main(argv: list[str] | None = None) -> int:
    global INSTALLED_CLI
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="one tiny model, one run, no peer (seconds; what the tests run)")
    mode.add_argument("--full", action="store_true", help="every model against Optimum, then the ~1B memory run (an hour or more)")
    parser.add_argument("--runs", type=int, default=None, help="runs per comparison (default 3 for --full, 1 for --smoke)")
    parser.add_argument("--out", default=None, help="folder for latest.md / latest.json (default benchmarks/results for --full)")
    parser.add_argument("--models", nargs="*", default=None,
                        help="only these models (names from benchmarks/models.py): tiny ones everywhere, and in e2e also "
                             "bert-base, gpt2-small, smollm2-135m, gemma-3-270m, llama-1b")
    sections = ("e2e", "inproc", "floor", "imports", "merged", "graph", "memory", "memory_stages")
    parser.add_argument("--skip", nargs="*", default=[], choices=sections, help="leave out these measurements")
    parser.add_argument("--only", nargs="*", default=None, choices=sections,
                        help="run only these measurements and update them in the existing latest.json (the rest is kept)")
    parser.add_argument("--render", action="store_true", help="only rewrite latest.md from latest.json in --out (or benchmarks/results)")
    args = parser.parse_args(argv)
    if args.render:
        folder = args.out or os.path.join(HERE, "results")
        with open(os.path.join(folder, "latest.json")) as f:
            _save(json.load(f), folder)
        return 0
    if args.only is not None:
        args.skip = [s for s in sections if s not in args.only]

    smoke = args.smoke
    runs = args.runs or (1 if smoke else 3)
    out_folder = args.out or (os.path.join(WORK, "smoke") if smoke else os.path.join(HERE, "results"))
    with_peer = not smoke
    tiny = [m for m in TINY if args.models is None or m.name in args.models]
    larger = [m for m in (*BASE, *REAL, BIG) if args.models is None or m.name in args.models]
    if smoke:
        tiny, larger = tiny[:1] or list(TINY[:1]), []
    os.makedirs(os.path.join(WORK, "out"), exist_ok=True)

    import peer

    previous = os.path.join(out_folder, "latest.json")
    results: dict[str, Any] = {}
    if args.only is not None and os.path.exists(previous):
        with open(previous) as f:
            results = json.load(f)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        results.setdefault("updated", []).append(
            {"sections": args.only, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "onnxspec_commit": commit,
             "runs": runs})
    fresh_run = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "smoke" if smoke else "full",
        "runs": runs,
        "machine": common.machine(),
        "targets_limits": TARGETS,
    }
    results = fresh_run | results  # an --only update keeps the original run's date and machine
    if with_peer:
        log("checking the Optimum venv")
        peer.ensure()
        import installed

        log("installing this checkout into the installed-onnxspec venv")
        INSTALLED_CLI = installed.ensure()
    results.setdefault("versions", {"project": {} if smoke else project_versions(), **({"peer": peer.versions()} if with_peer else {})})
    results["onnxspec_command"] = (
        "onnxspec export --model DIR --task TASK OUT (the checkout installed as a user installs it: `pip install .`, core "
        "dependencies only, in benchmarks/.work/onnxspec-venv)" if INSTALLED_CLI
        else "onnxspec export --model DIR --task TASK OUT" if onnxspec_cli((tiny or larger)[0], "OUT")[0] == PROJECT_CLI
        else "python -c 'onnxspec.pipeline.core.export(...)'")

    log(f"building {len(tiny)} tiny model folders")
    results["models"] = results.get("models", {}) | {m.name: build_model(m) for m in tiny}
    if smoke:
        measure_smoke(tiny[0], results)
        results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _save(results, out_folder)
        log(f"results written to {out_folder}")
        return 0
    if "e2e" not in args.skip:
        # the e2e section also times the CLIs on full-size models: base-sized (random weights),
        # real checkpoints (SmolLM2-135M, gemma-3-270m) and the ~1B llama, one export at a time
        log(f"building {len(larger)} larger model folders")
        results["models"] |= {m.name: build_model(m) for m in larger}
        results["e2e"] = results.get("e2e", {}) | measure_e2e(tiny + larger, runs, with_peer)
    if "inproc" not in args.skip:
        results["inproc"] = measure_inproc(tiny, runs, with_peer)
    if "floor" not in args.skip:
        results["floor"] = measure_floor(tiny, max(runs, 5))
    if "imports" not in args.skip:
        results["imports"] = measure_imports(runs, with_peer)
    _save(results, out_folder)
    if "merged" not in args.skip:
        results["merged"] = measure_merged(list(MERGED), max(runs, 5))
        _save(results, out_folder)
    if "graph" not in args.skip:
        results["graph"] = measure_graphs(list(BASE), runs, with_peer, False)
    _save(results, out_folder)
    if "memory" not in args.skip:
        results["memory"] = measure_memory(BIG, with_peer)
        _save(results, out_folder)
    if "memory_stages" not in args.skip:
        results["memory_stages"] = measure_memory_stages(BIG)
    results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    _save(results, out_folder)
    log(f"results written to {out_folder}")
    return 0


def _save(results: dict[str, Any], folder: str) -> None:
    import report

    results["targets"] = targets(results)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "latest.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
    with open(os.path.join(folder, "latest.md"), "w") as f:
        f.write(report.markdown(results))


if __name__ == "__main__":
    sys.exit(main())
