"""Render ``.real-models/results.json`` (written by ``tests/real``) as the README's markdown
"Real checkpoints" table: one row per model and float dtype.

    .venv/bin/python scripts/real_table.py [RESULTS_JSON]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_models import MODELS, RESULTS  # noqa: E402

COLUMNS = (
    "model", "type", "dtype", "exported", "validated", "max error / bound",
    "generation vs `generate` (32 greedy tokens)", "export time", "peak memory",
)


def _validated(export: Mapping[str, object]) -> str:
    if not export.get("exported"):
        return "–"
    if not export.get("validated"):
        return "not validated"
    if export.get("passed"):
        return "passed"
    return f"**failed** ({len(export.get('failures') or [])} checks)"


def _error(export: Mapping[str, object]) -> str:
    worst = export.get("worst")
    if not isinstance(worst, Mapping):
        return "–"
    error, bound = float(worst["error"]), float(worst["bound"])
    where = f"{worst['output']}, {worst['shape_set']}"
    name = "" if worst.get("criterion") == "error/bound" else " (max abs / atol)"
    return f"{error:.1e} / {bound:.1e}{name} ({where})"


def _generation(entry: Mapping[str, object], dtype: str) -> str:
    gen = entry.get(f"generation_{dtype}")
    if isinstance(gen, Mapping):
        total = gen["new_tokens"]
        if gen["identical"]:
            return f"identical ({total}/{total} tokens)"
        step = gen["first_divergence"]
        verdict = "**differs**" if dtype == "fp32" else "diverges"
        return f"{verdict} at new token {step} (first {step} of {total} identical)"
    emb = entry.get(f"embeddings_{dtype}")
    if isinstance(emb, Mapping):
        ok = "" if emb["within_limits"] else " (outside 1e-4 / 0.99999)"
        return f"embeddings: max abs {emb['max_abs']:.1e}, min cosine {emb['min_cosine']:.7f}{ok}"
    return "–"


def _memory(export: Mapping[str, object]) -> str:
    peak = export.get("peak_rss_bytes")
    return f"{float(peak) / 2**30:.2f} GiB" if peak else "–"


def _time(export: Mapping[str, object]) -> str:
    seconds = export.get("export_seconds")
    return f"{float(seconds):.0f} s" if seconds is not None else "–"


def render(results: Mapping[str, Mapping[str, object]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name in (*MODELS, *sorted(set(results) - set(MODELS))):
        entry = results.get(name)
        if not isinstance(entry, Mapping) or name.startswith("_"):
            continue
        title = MODELS[name]["title"] if name in MODELS else name
        for dtype in ("fp32", "fp16"):
            export = entry.get(dtype)
            if not isinstance(export, Mapping):
                continue
            row = (
                str(title), f"`{export.get('model_type')}`", dtype, "yes" if export.get("exported") else "**no**",
                _validated(export), _error(export), _generation(entry, dtype), _time(export), _memory(export),
            )
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else RESULTS
    if not os.path.isfile(path):
        print(f"error: {path} does not exist; run `bash scripts/dev.sh real` first", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
