"""Deliberately wrong exports must fail validation, under the old criterion and the current one.

Every variant of the corpus in ``tests/broken.py`` (a trace-time patch or an edit of a correct
graph) is built on each tiny model it applies to and judged twice:

* ``default``: the criterion this tree gives the outputs (a fixed tolerance before the
  validation redesign, a noise bound calibrated against float64 after it);
* ``fixed-1e-4``: the old criterion, ``|onnx - torch| <= 1e-4 + 1e-3 |torch|``.

As a control, the unbroken export of the same model passes, and re-validating its unedited
graphs the way the edited ones are validated passes too, under both criteria: a variant cannot
be "caught" by a validation that would fail anyway. The test table below says which variant
applies to which model; ``test_unbroken_export_passes`` checks that the corpus agrees with it,
so no variant is silently left out.

The tiny models have random biases and norm weights (``tiny_live_folder``): transformers
initialises biases to zero, and dropping a zero bias changes nothing. Exports are made once per
model (module-scoped) and broken exports once per variant, shared by both criteria. Run with
``-s`` to see every verdict (worst error against its bound); the summary is printed at the end.
"""

from __future__ import annotations

import contextlib
import math
import os

import pytest

from onnxspec.errors import ValidationError
from onnxspec.catalog.models import REGISTRY
from onnxspec.catalog.registry import spec_for
from onnxspec.pieces.shapes import DTypes
from onnxspec.pieces.spec import tolerance_for
from tests import broken as corpus

pytestmark = pytest.mark.integration

MODELS = {
    "gpt2-with-past": ("gpt2", "text-generation-with-past"),
    "llama-with-past": ("llama", "text-generation-with-past"),
    "bert-feature-extraction": ("bert", "feature-extraction"),
    "bert-text-classification": ("bert", "text-classification"),
    "bart-with-past": ("bart", "text2text-generation-with-past"),
}

_ENCODER = ("frozen-axis", "position-ids-off-by-one", "attention-mask-ignored", "bias-dropped",
            "layernorm-epsilon-default", "layernorm-epsilon-gross")
_CACHE = ("cache-key-value-swapped", "cache-layers-shifted")

APPLIES: dict[str, tuple[str, ...]] = {
    # GPT-2: learned positions (no rotary), Conv1D biases, LayerNorm eps 1e-5, tied head
    "gpt2-with-past": ("frozen-axis", *_CACHE, "position-ids-off-by-one", "attention-mask-ignored", "bias-dropped",
                       "layernorm-epsilon-default", "layernorm-epsilon-gross", "head-rows-permuted"),
    # LLaMA: rotary, no Linear bias at all, RMSNorm eps 1e-6
    "llama-with-past": ("frozen-axis", "rotary-beyond-trace", *_CACHE, "position-ids-off-by-one", "attention-mask-ignored",
                        "layernorm-epsilon-default", "layernorm-epsilon-gross", "head-rows-permuted"),
    # BERT: no cache, no rotary; feature extraction has no head
    "bert-feature-extraction": _ENCODER,
    "bert-text-classification": (*_ENCODER, "head-rows-permuted"),
    # BART: learned positions (offset 2), biases, LayerNorm eps 1e-5, three graphs
    "bart-with-past": ("frozen-axis", *_CACHE, "position-ids-off-by-one", "attention-mask-ignored", "bias-dropped",
                       "layernorm-epsilon-default", "layernorm-epsilon-gross", "head-rows-permuted"),
}

# Whether this tree's default criterion is still the old fixed tolerance (before the noise bound).
_DEFAULT_IS_FIXED = type(tolerance_for(spec_for(REGISTRY, "bert", "text-classification"), "logits", DTypes())).__name__ == "Tolerance"

# Measured misses, each with its numbers: kept as strict xfails, so that the day validation
# catches them the test says so.
NOT_CAUGHT: dict[tuple[str, str, str], str] = {
    ("bert-text-classification", "layernorm-epsilon-default", "fixed-1e-4"): (
        "LayerNorm epsilon 1e-12 -> 1e-5 moves the tiny classifier's logits (|logits| < 4e-2) by at most "
        "6.7e-6, under the fixed bound 1e-4 + 1e-3|torch| (1.2e-4): invisible to the old criterion; the "
        "noise bound (error 4.1e-6 against a bound of 2.2e-7, 19x) catches it"
    ),
}
if _DEFAULT_IS_FIXED:
    NOT_CAUGHT[("bert-text-classification", "layernorm-epsilon-default", "default")] = NOT_CAUGHT[
        ("bert-text-classification", "layernorm-epsilon-default", "fixed-1e-4")
    ]


def _cases() -> list:
    cases = []
    for label, variants in APPLIES.items():
        for name in variants:
            for criterion in corpus.CRITERIA:
                marks = ()
                reason = NOT_CAUGHT.get((label, name, criterion))
                if reason is not None:
                    marks = (pytest.mark.xfail(strict=True, reason=reason),)
                cases.append(pytest.param(label, name, criterion, id=f"{label}/{name}@{criterion}", marks=marks))
    return cases


class Lab:
    """Tiny folders, control exports, broken exports and verdicts, each made once per module."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._subjects: dict[str, tuple] = {}
        self._broken: dict[tuple[str, str], corpus.Broken] = {}
        self._verdicts: dict[tuple[str, str, str], corpus.Judgement] = {}
        self.summary: list[tuple[str, str, corpus.Judgement]] = []

    def subject(self, label: str) -> tuple[corpus.Subject, object, dict[str, str]]:
        if label not in self._subjects:
            model_type, task = MODELS[label]
            base = os.path.join(self.root, label)
            folder = corpus.tiny_live_folder(model_type, task, os.path.join(base, "model"))
            subject = corpus.load_subject(folder, task, label=label)
            report, control = corpus.export_control(subject, base)
            self._subjects[label] = (subject, report, control)
        return self._subjects[label]

    def broken(self, label: str, name: str) -> corpus.Broken:
        key = (label, name)
        if key not in self._broken:
            subject, _report, control = self.subject(label)
            workdir = os.path.join(self.root, label, "broken", name)
            os.makedirs(workdir, exist_ok=True)
            self._broken[key] = corpus.make_broken(subject, corpus.BY_NAME[name], control, workdir)
        return self._broken[key]

    def verdict(self, label: str, name: str, criterion: str) -> corpus.Judgement:
        key = (label, name, criterion)
        if key not in self._verdicts:
            subject, _report, _control = self.subject(label)
            judgement = corpus.judge(subject, self.broken(label, name), criterion)
            self._verdicts[key] = judgement
            self.summary.append((f"{label}/{name}", criterion, judgement))
        return self._verdicts[key]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    made = Lab(str(tmp_path_factory.mktemp("broken")))
    yield made
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not made.summary:
        return
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line("broken graphs: worst check of each variant (error against its bound)")
        for criterion in corpus.CRITERIA:
            rows = [(v, j) for v, c, j in made.summary if c == criterion]
            for variant, judgement in rows:
                reporter.write_line(f"  [{criterion}] {variant:50s} {judgement}")
            caught = sum(j.caught for _, j in rows)
            reporter.write_line(f"  [{criterion}] broken caught {caught} of {len(rows)}")


@pytest.mark.parametrize("label", list(MODELS))
def test_unbroken_export_passes(lab: Lab, label: str) -> None:
    subject, report, control = lab.subject(label)
    assert report.passed, report.failures
    for criterion in corpus.CRITERIA:
        judgement = corpus.validate_files(subject, control, criterion)
        assert not any(judgement.graphs.values()), f"the unbroken export fails under {criterion}: {judgement}"
        assert judgement.checks and all(c.passed for c in judgement.checks)
    # the corpus finds exactly the variants this file parametrizes for the model
    found = [v.name for v in corpus.applicable(subject, control)]
    assert found == [v.name for v in corpus.VARIANTS if v.name in APPLIES[label]], found


@pytest.mark.parametrize(("label", "name", "criterion"), _cases())
def test_broken_export_is_caught(lab: Lab, label: str, name: str, criterion: str) -> None:
    variant = corpus.BY_NAME[name]
    broken = lab.broken(label, name)
    assert broken.files, f"{label}/{name}: the variant changed no graph"
    if variant.patches is not None:
        assert broken.export_raised is ValidationError, f"{label}/{name}: export did not raise ValidationError"
        assert broken.export_report is not None and not broken.export_report.passed
    else:  # every graph the edit applies to is edited, and each one must be caught on its own
        assert broken.notes and all(broken.notes.values()), broken.notes
    judgement = lab.verdict(label, name, criterion)
    print(f"{label}/{name} [{criterion}] {'; '.join(f'{k}: {v}' for k, v in broken.notes.items())} -> {judgement}")
    margin = judgement.margin
    assert margin is not None and (math.isinf(margin.error) or margin.error > 0), judgement
    assert judgement.caught, f"{label}/{name} under {criterion}: {judgement}"


@pytest.mark.parametrize(("label", "name"), [("gpt2-with-past", "frozen-axis"), ("llama-with-past", "rotary-beyond-trace")],
                         ids=["gpt2-with-past/frozen-axis", "llama-with-past/rotary-beyond-trace"])
def test_the_harmless_twin_of_a_trace_patch_exports_fine(lab: Lab, label: str, name: str, tmp_path) -> None:
    """The same wrapper with nothing baked into the trace validates: the broken patch fails
    because of what it bakes in, not because a forward was wrapped."""
    import attrs

    from onnxspec.pipeline.core import export

    subject, _report, _control = lab.subject(label)
    make = {"frozen-axis": corpus.frozen_axis_patches, "rotary-beyond-trace": corpus.rotary_patches}[name]
    patches = make(subject, bake=False)
    assert patches
    spec = attrs.evolve(subject.spec, patches=subject.spec.patches + patches)
    assert export(subject.folder, tmp_path / "onnx", spec=spec).passed
