"""Turns the results dictionary of ``run.py`` into benchmarks/results/latest.md."""

from __future__ import annotations

from typing import Any

from common import gib, mib


def _s(x: dict[str, Any] | None, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    """``min / median / max`` of a summary."""
    if not x or x.get("median") is None:
        return "n/a"
    return " / ".join(fmt.format(x[k] * scale) for k in ("min", "median", "max"))


def _r(x: dict[str, Any] | None) -> str:
    if not x or x.get("median_ratio") is None:
        return "n/a"
    p = x["paired"]
    spread = f" (runs {p['min']:.2f}-{p['max']:.2f})" if p.get("median") is not None and len(p["runs"]) > 1 else ""
    return f"**{x['median_ratio']:.2f}x**{spread}"


def headline(results: dict[str, Any]) -> list[str]:
    """The short table of headline ratios (the one the project README carries)."""
    m = results["machine"]
    lines = [
        f"Measured {results['date'][:10]} on {m['nproc']} shared CPU cores ({m['cpu']}), {m['memory_gib']} GiB RAM; "
        f"ratios are onnxspec / baseline, medians of {results['runs']}+ interleaved runs (lower is better).",
        "",
        "| measurement | baseline | ratio | target | status |",
        "|---|---|---|---|---|",
    ]
    t = results.get("targets", {})

    def status(key: str) -> str:
        v = t.get(key)
        if not v:
            return "n/a"
        return v["status"] + (f" (by {v['by']})" if v.get("by") else "")

    for name, e in results.get("e2e", {}).items():
        if "ratio_seconds" in e:
            limit = t.get("e2e CLI time vs Optimum: " + name, {}).get("limit")
            shown = f"<= {limit}x" if limit is not None else "-"
            lines.append(f"| end-to-end CLI time, {name} | optimum-cli export onnx | {_r(e['ratio_seconds'])} | {shown} | {status('e2e CLI time vs Optimum: ' + name)} |")
    for name, e in results.get("e2e", {}).items():
        if "ratio_peak_rss" in e:
            lines.append(f"| end-to-end CLI peak RSS, {name} | optimum-cli export onnx | {_r(e['ratio_peak_rss'])} | - | - |")
    for name, e in results.get("inproc", {}).items():
        if "ratio_warm_seconds" in e:
            lines.append(f"| in-process export + validation (second call, imports excluded), {name} | Optimum main_export | {_r(e['ratio_warm_seconds'])} | - | - |")
        elif "ratio_seconds" in e:
            lines.append(f"| in-process export + validation (first call), {name} | Optimum main_export | {_r(e['ratio_seconds'])} | - | - |")
    for name, e in results.get("floor", {}).items():
        if "ratio_pipeline_vs_raw" in e:
            lines.append(f"| pipeline export without validation, {name} | raw torch.onnx.export | {_r(e['ratio_pipeline_vs_raw'])} | <= 1.1x | "
                         f"{status('pipeline export (no validation) vs raw torch.onnx.export: ' + name)} |")
    for name, e in results.get("graph", {}).items():
        for case, row in e.get("latency_ms", {}).items():
            if "ratio" in row:
                lines.append(f"| onnxruntime latency, {name} {case} | Optimum's graph | {_r(row['ratio'])} | <= 1.0x | {status(f'graph latency vs Optimum: {name} {case}')} |")
        if "nodes" in e and "optimum" in e["nodes"]:
            n = e["nodes"]
            lines.append(f"| graph node count, {name} | Optimum's graph | **{n['onnxspec'] / n['optimum']:.2f}x** ({n['onnxspec']} vs {n['optimum']}) | - | - |")
    for name, e in results.get("merged", {}).items():
        if "ratio_seconds" in e:
            lines.append(f"| seq2seq export with decoder_model_merged.onnx (4 files), {name} | the same export with merged=False (3 files) | "
                         f"{_r(e['ratio_seconds'])} | <= 1.3x | {status('export with merged decoder vs three-file export: ' + name)} |")
    mem = results.get("memory")
    if mem and mem.get("ok"):
        name = mem["model"]["name"]
        lines.append(f"| peak RSS exporting {name} ({mem['model']['parameters'] / 1e9:.2f} B params) | its fp32 weight bytes | "
                     f"**{mem['ratio_peak_rss_vs_weights']:.2f}x** | <= 1.5x | {status('peak RSS vs weight bytes: ' + name)} |")
        opt = mem.get("optimum")
        if opt and opt.get("ok"):
            lines.append(f"| peak RSS exporting {name} | optimum-cli export onnx | **{mem['peak_rss'] / opt['peak_rss']:.2f}x** "
                         f"(Optimum: {opt['ratio_vs_weights']:.2f}x the weights) | - | - |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    v = results.get("versions", {})
    m = results["machine"]
    lines = [
        "# onnxspec benchmark results",
        "",
        f"- date: {results['date']}" + (f" (finished {results['finished']})" if results.get("finished") else " (partial: run still going or stopped)"),
        f"- mode: {results['mode']}, runs per comparison: {results['runs']}",
        *(f"- sections {', '.join(u['sections'])} re-measured {u['date']} at onnxspec commit {u.get('onnxspec_commit', '?')}"
          + (f" with --runs {u['runs']}" if u.get("runs") else "")
          for u in results.get("updated", [])),
        f"- machine: {m['nproc']} CPU cores ({m['cpu']}), {m['memory_gib']} GiB RAM, {m['platform']}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_at_start'])} (the cores are shared, so absolute times are noisy; "
        "the interleaved ratios are what to read)",
        f"- onnxspec side (at the start of the run; later sections name their own commit above): {', '.join(f'{k} {x}' for k, x in v.get('project', {}).items())}",
        f"- Optimum side (its own venv): {', '.join(f'{k} {x}' for k, x in v.get('peer', {}).items()) or 'not run'}",
        f"- onnxspec command measured: `{results.get('onnxspec_command', '?')}`",
        "- reproduce: `bash scripts/dev.sh setup && .venv/bin/python benchmarks/run.py --full`",
        "",
        "## Headline ratios",
        "",
        *headline(results),
        "",
        "## Targets",
        "",
        "| target | value | limit | status |",
        "|---|---|---|---|",
    ]
    for key, t in results.get("targets", {}).items():
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}x"
        lines.append(f"| {key} | {value} | {t['limit']}x | {t['status']}{' by ' + t['by'] if t.get('by') else ''} |")

    if results.get("e2e"):
        lines += ["", "## 1. End-to-end CLI export (whole process, both validating)", "",
                  "Wall seconds and peak RSS, min / median / max.", "",
                  "| model / task | onnxspec s | Optimum s | time ratio | onnxspec peak RSS MiB | Optimum peak RSS MiB | RSS ratio |",
                  "|---|---|---|---|---|---|---|"]
        for name, e in results["e2e"].items():
            o, p = e.get("onnxspec", {}), e.get("optimum", {})
            lines.append(f"| {name} | {_s(o.get('seconds'), fmt='{:.1f}')} | {_s(p.get('seconds'), fmt='{:.1f}')} | {_r(e.get('ratio_seconds'))} | "
                         f"{_s(o.get('peak_rss'), 2**-20, '{:.0f}')} | {_s(p.get('peak_rss'), 2**-20, '{:.0f}')} | {_r(e.get('ratio_peak_rss'))} |")
        lines += _errors(results["e2e"])

    if results.get("inproc"):
        lines += ["", "## 2a. In-process export with validation (imports excluded)", "",
                  "Seconds inside `onnxspec.pipeline.core.export(folder, ...)` vs inside Optimum's `main_export(...)` (load, trace, "
                  "validate, write), each in a fresh process with torch, transformers, onnxruntime and the exporter imported "
                  "before the clock. *first call*: still pays the lazy imports done inside the call (model classes, and for "
                  "onnxspec onnxscript) and torch's first-trace warm-up; *second call*: the same export again in the same process, "
                  "every import excluded.", "",
                  "| model / task | onnxspec first s | Optimum first s | ratio first | onnxspec second s (trace / validate) | Optimum second s | ratio second |",
                  "|---|---|---|---|---|---|---|"]
        for name, e in results["inproc"].items():
            o, p = e.get("onnxspec", {}), e.get("optimum", {})
            details = o.get("details", [])
            trace = sorted(d.get("warm_trace_seconds", d["trace_seconds"]) for d in details)
            val = sorted(d.get("warm_validate_seconds", d["validate_seconds"]) for d in details)
            med = (lambda xs: f"{xs[len(xs) // 2]:.2f}" if xs else "n/a")
            lines.append(f"| {name} | {_s(o.get('seconds'))} | {_s(p.get('seconds'))} | {_r(e.get('ratio_seconds'))} | "
                         f"{_s(o.get('warm_seconds'))} ({med(trace)} / {med(val)}) | {_s(p.get('warm_seconds'))} | {_r(e.get('ratio_warm_seconds'))} |")
        lines += _errors(results["inproc"])

    if results.get("floor"):
        lines += ["", "## 2b. Pipeline export without validation vs the raw torch.onnx.export floor", "",
                  "One warmed process per model: `export(model, out, validation_shapes=())` (resolve, dummies, trace, graph check, "
                  "stamp, save, onnx.checker, an onnxruntime session is still opened, side files, atomic move) vs only the "
                  "`torch.onnx.export` calls on the same `graph_module` wrapper and dummy inputs (same names, axes, opset). Seconds, "
                  "min / median / max; the trace stage is the pipeline's own `export_seconds` (torch.onnx.export + loading the proto back).", "",
                  "| model / task | graphs | raw s | pipeline s | trace stage s | pipeline / raw | trace stage / raw |", "|---|---|---|---|---|---|---|"]
        for name, e in results["floor"].items():
            if "error" in e:
                lines.append(f"| {name} | failed | | | | | |")
                continue
            lines.append(f"| {name} | {len(e['graphs'])} | {_s(e['raw_torch_onnx_export'], fmt='{:.3f}')} | {_s(e['pipeline_no_validation'], fmt='{:.3f}')} | "
                         f"{_s(e['pipeline_trace_stage'], fmt='{:.3f}')} | {_r(e['ratio_pipeline_vs_raw'])} | {_r(e['ratio_trace_stage_vs_raw'])} |")
        stages = {name: e["pipeline_stage_seconds_median"] for name, e in results["floor"].items() if e.get("pipeline_stage_seconds_median")}
        if stages:
            names = list(next(iter(stages.values())))
            lines += ["", "Where the pipeline's time goes (median seconds per stage, from its progress callback; "
                      "`validate` here is only opening the onnxruntime session, `check` includes saving and onnx.checker):", "",
                      "| model / task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for name, st in stages.items():
                lines.append(f"| {name} | " + " | ".join(f"{st.get(k, 0.0):.3f}" for k in names) + " |")

    if results.get("imports"):
        lines += ["", "## 2c. Import cost (diagnosis of section 1)", "",
                  "Wall seconds of a process that only imports what each exporter needs: the fixed cost every CLI run pays "
                  "before any work. min / median / max.", "", "| side | imports | seconds |", "|---|---|---|"]
        for side, probes in results["imports"].items():
            for key, x in probes.items():
                lines.append(f"| {side} | {key} | {_s(x)} |")

    if results.get("graph"):
        lines += ["", "## 3. The exported graphs: onnxruntime latency and node count", ""]
        for name, e in results["graph"].items():
            meta = e["model"]
            lines += [f"### {name} ({meta['architecture']}, {meta['parameters'] / 1e6:.0f} M parameters, task {meta['task']})", ""]
            ex = e.get("exports", {})
            for side, x in ex.items():
                lines.append(f"- {side} CLI export of this model (one run): {x['seconds']:.1f} s, peak RSS {mib(x['peak_rss'])}" + ("" if x["ok"] else " FAILED"))
            if "nodes" in e:
                lines.append(f"- node count (subgraphs included): " + ", ".join(f"{k} {n}" for k, n in e["nodes"].items()))
            lines += ["", "| case | onnxspec ms | Optimum ms | ratio |", "|---|---|---|---|"]
            for case, row in e.get("latency_ms", {}).items():
                lines.append(f"| {case} | {_s(row.get('onnxspec'))} | {_s(row.get('optimum'))} | {_r(row.get('ratio'))} |")
            if "error" in e:
                lines += ["", "```", e["error"], "```"]
            lines.append("")

    if results.get("merged"):
        lines += ["", "## 2d. The merged decoder's cost: seq2seq export with and without decoder_model_merged.onnx", "",
                  "`onnxspec_worker.py merged`: one `export(folder, out, task=..., merged=True | False)` (with validation) per fresh "
                  "process, imports excluded from *in export*, included in *process*; the two sides interleaved run by run. "
                  "*merged* writes encoder_model, decoder_model, decoder_with_past_model and decoder_model_merged (traced from the "
                  "two decoders, checked, validated on both branches); *three-file* is `merged=False`, the layout before merged "
                  "decoders. Seconds, min / median / max; the ratio is of the medians, with the spread and the median of the per-run "
                  "paired ratios (run *i* of both sides saw the same machine load); *merge stages* is the merged file's own trace "
                  "(the merge), check and validate.", "",
                  "| model | merged s in export | three-file s in export | ratio | merged s process | three-file s process | ratio | merge stages s |",
                  "|---|---|---|---|---|---|---|---|"]
        def paired(x: dict[str, Any] | None) -> str:
            return _r(x) + (f", paired median {x['paired']['median']:.2f}x" if x and x.get("paired", {}).get("median") is not None else "")

        for name, e in results["merged"].items():
            a, b = e.get("merged", {}), e.get("three-file", {})
            lines.append(f"| {name} ({e['model']['parameters'] / 1e6:.1f} M params) | {_s(a.get('seconds'))} | {_s(b.get('seconds'))} | {paired(e.get('ratio_seconds'))} | "
                         f"{_s(a.get('process_seconds'))} | {_s(b.get('process_seconds'))} | {paired(e.get('ratio_process_seconds'))} | "
                         f"{_s(a.get('merge_stages_seconds'))} |")
        lines += ["", "Median seconds per stage kind, summed over the graphs (from the pipeline's progress callback):", "",
                  "| model | side | " + " | ".join(("resolve", "load", "dummies", "trace", "check", "validate", "write")) + " |", "|---|---|" + "---|" * 7]
        for name, e in results["merged"].items():
            for side in ("merged", "three-file"):
                st = e.get(side, {}).get("stage_seconds_median", {})
                if st:
                    lines.append(f"| {name} | {side} | " + " | ".join(f"{st.get(k, 0.0):.2f}" for k in ("resolve", "load", "dummies", "trace", "check", "validate", "write")) + " |")
        lines += ["", "Files written (bytes):", "", "| model | side | encoder_model | decoder_model | decoder_with_past_model | decoder_model_merged | all .onnx | merged / decoder_model |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, e in results["merged"].items():
            for side in ("merged", "three-file"):
                f = e.get(side, {}).get("files", {})
                cells = " | ".join(f"{f[n]:,}" if n in f else "-" for n in
                                   ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "decoder_model_merged.onnx"))
                size = e.get("merged_file_vs_decoder_model") if side == "merged" else None
                lines.append(f"| {name} | {side} | {cells} | {e.get('onnx_bytes', {}).get(side, 0):,} | {f'{size:.3f}x' if size else '-'} |")
        for name, e in results["merged"].items():
            for side in ("merged", "three-file"):
                for err in e.get(side, {}).get("errors", [])[:1]:
                    lines += ["", f"{side} failed on {name}:", "", "```", err, "```"]

    mem = results.get("memory")
    if mem:
        meta = mem["model"]
        lines += ["", "## 4. Memory: exporting a large decoder", "",
                  f"- model: {meta['name']} ({meta['architecture']}), {meta['parameters']:,} parameters, fp32 weights {gib(meta['weight_bytes'])}",
                  f"- onnxspec CLI export with validation: {mem['seconds']:.0f} s, peak RSS {gib(mem['peak_rss'])}"
                  + (f" = **{mem['ratio_peak_rss_vs_weights']:.2f}x** the weight bytes" if mem.get("ok") else " (FAILED)")]
        for step, label in (("load", "loading the model alone (transformers from_pretrained memory-maps the safetensors file, so "
                                     "the weights become resident only when the trace touches them)"),
                            ("raw", "loading it + the bare torch.onnx.export calls (no check, no validation)")):
            f = mem.get("floors", {}).get(step)
            if f:
                lines.append(f"- floor, {label}: {f['seconds']:.0f} s, peak RSS {gib(f['peak_rss'])} = {f['ratio_vs_weights']:.2f}x the weight bytes"
                             + ("" if f["ok"] else " (FAILED)"))
        opt = mem.get("optimum")
        if opt:
            lines.append(f"- Optimum CLI export of the same folder (with validation): {opt['seconds']:.0f} s, peak RSS {gib(opt['peak_rss'])} = "
                         f"{opt['ratio_vs_weights']:.2f}x the weight bytes" + ("" if opt["ok"] else " (FAILED)")
                         + (f"; onnxspec / Optimum peak = **{mem['peak_rss'] / opt['peak_rss']:.2f}x**" if opt["ok"] and mem.get("ok") else ""))
        if mem.get("ok"):
            ext = mem["external_data"]
            lines.append(f"- external data: weights over 2 GB: {ext['weights_over_2GB']}; data files {ext['data_files']}; "
                         f"largest .onnx file {ext['largest_onnx_file']:,} bytes -> {'OK' if ext['ok'] else 'NOT OK'}")
        else:
            lines += ["", "```", mem.get("error", ""), "```"]
    st = results.get("memory_stages")
    if st and "peak_rss_by_stage" in st:
        w = st["model"]["weight_bytes"]
        lines += ["", f"Peak RSS during each stage of one in-process onnxspec export of {st['model']['name']} (sampled every 20 ms; "
                  f"export {st['seconds']:.0f} s, process peak {gib(st['process_peak_rss'])} = {st['process_peak_rss'] / w:.2f}x the weights):", "",
                  "| stage | peak RSS | x weight bytes |", "|---|---|---|"]
        for stage in st["stages"]:
            if stage in st["peak_rss_by_stage"]:
                v = st["peak_rss_by_stage"][stage]
                lines.append(f"| {stage} | {gib(v)} | {v / w:.2f}x |")
    return "\n".join(lines) + "\n"


def _errors(section: dict[str, Any]) -> list[str]:
    out = []
    for name, e in section.items():
        for side in ("onnxspec", "optimum"):
            for err in e.get(side, {}).get("errors", [])[:1]:
                out += ["", f"{side} failed on {name}:", "", "```", err, "```"]
    return out
