"""A corpus of deliberately wrong exports that validation must catch.

Each :class:`Variant` turns a correct export into a wrong one, in one of two ways:

* ``trace-patch``: a :class:`onnxspec.pieces.patches.Patch` added to the spec's ``patches``. The
  pipeline applies patches only while tracing, so the graph is wrong while PyTorch's reference
  (run unpatched) stays right: ``export`` must raise :class:`onnxspec.errors.ValidationError`.
* ``onnx-edit``: a correct export's graph file is edited with the ``onnx`` package, then
  validated again exactly as the pipeline does (``onnxspec.judge.validate.validate`` with the module of
  ``onnxspec.build.wrappers.graph_module``): some check must fail or some problem be reported.

The variants are pure functions of a :class:`Subject` (a model folder, its task, its loaded
model and bound spec), so they apply to any folder: the tiny random models of the tests, or a
real checkpoint (``run_corpus(folder, task)`` reports "broken caught X of N"). Variants that
cannot apply to a model (no rotary embedding, no cache, no bias, no head) say so with
``applies``; they are not run for it.

The kinds (``KINDS``; variant names in parentheses):

1. frozen axis (``frozen-axis``, trace-patch): the model's main output is sliced to the size
   the tracer saw, ``out.narrow(axis, 0, int(out.shape[axis]))``: eagerly a no-op, but ``int()``
   makes the traced size a constant of the graph (the classic TracerWarning bug). The sequence
   axis when the output has one, else the batch axis. The graph returns the traced length at a
   longer input, so the shapes differ.
2. rotary positions wrong beyond the trace length (``rotary-beyond-trace``, trace-patch; models
   with a ``*RotaryEmbedding`` module): the cos/sin table covers only the traced sequence length,
   positions past it read its last row (``position_ids.clamp(max=int(len) - 1)``).
3. a wrong cache (onnx-edit; models with ``present.*`` outputs): ``cache-key-value-swapped``
   (``present.0.key`` returns the values and vice versa; the decoder self-attention cache of a
   seq2seq) and ``cache-layers-shifted`` (``present.i.*`` returns layer ``i+1``'s, cyclically).
4. positions off by one (``position-ids-off-by-one``, onnx-edit): ``position_ids + 1`` right
   after the graph input; without a ``position_ids`` input, the indices of the Gather reading a
   learned position table (BERT, BART) get ``+ 1``.
5. an ignored attention mask (``attention-mask-ignored``, onnx-edit): every consumer of
   ``attention_mask`` / ``encoder_attention_mask`` reads ones of its shape instead.
6. a dropped bias (``bias-dropped``, onnx-edit; models with Linear biases): the bias of one
   Linear (MatMul + Add, or Gemm) is replaced by zeros in that node only (initializers may be
   shared). The bias with the largest norm is chosen, except a key projection's, which softmax
   cancels exactly (``q.(k + b) = q.k + q.b`` is constant along the keys).
7. a wrong norm epsilon (onnx-edit): every LayerNormalization ``epsilon`` attribute and every
   RMSNorm / decomposed LayerNorm ``ReduceMean -> Add(eps)`` constant is replaced.
   ``layernorm-epsilon-default`` is the realistic mistake: the framework default 1e-5 where the
   config says otherwise (BERT 1e-12, LLaMA 1e-6), or 1e-12 (BERT's) where the config says
   1e-5 (GPT-2, BART). ``layernorm-epsilon-gross`` uses 1e-1.
8. the wrong head (``head-rows-permuted``, onnx-edit; graphs with a ``logits`` output): the
   weight of the MatMul / Gemm producing the logits is rolled by one along its output axis
   (class / token ``i`` gets row ``i + 1``'s weights), in a copy used by that node only.

How detectable an epsilon error is. Normalising ``x`` by ``sqrt(var + eps')`` instead of
``sqrt(var + eps)`` changes the output relatively by about ``|eps' - eps| / (2 var)``: it is
visible only where the variance at a norm's input is not much larger than the epsilon error.
Measured on the tiny random models of the tests (hidden 32, weights of std 0.02, so the
embedding LayerNorm sees a variance of ~1e-3; biases and norm weights random, see
:func:`tiny_live_folder`), every norm of every graph edited, worst max abs error over outputs
and shape sets; "old" is the fixed bound ``1e-4 + 1e-3 |torch|``, "noise" the noise-bound
criterion of the validation redesign (``onnxspec.pieces.criteria``, error against float64):

========================  ======  ===========  =============  ======  =====================
model                     config  graph        max abs error  old     noise (error / bound)
========================  ======  ===========  =============  ======  =====================
gpt2-with-past            1e-5    1e-12 (*)    4.8e-3         caught  4.8e-3 / 6.4e-6
gpt2-with-past            1e-5    1e-6         4.3e-3         caught  caught
gpt2-with-past            1e-5    1e-1 (**)    3.8e-1         caught  caught
llama-with-past           1e-6    1e-5 (*)     7.6e-2         caught  7.6e-2 / 5.1e-6
llama-with-past           1e-6    1e-7         1.5e-2         caught  caught
llama-with-past           1e-6    1e-1 (**)    3.8e-1         caught  caught
bert-feature-extraction   1e-12   1e-9         9.5e-7         missed  missed (8.6e-7 / 4.9e-5)
bert-feature-extraction   1e-12   1e-7         3.4e-5         missed  missed (2.4e-5 / 3.0e-5)
bert-feature-extraction   1e-12   1e-6         3.4e-4         caught  caught
bert-feature-extraction   1e-12   1e-5 (*)     3.4e-3         caught  2.4e-3 / 3.0e-5
bert-feature-extraction   1e-12   1e-1 (**)    3.1            caught  caught
bert-text-classification  1e-12   1e-7         6.7e-8         missed  missed (4.3e-8 / 2.2e-7)
bert-text-classification  1e-12   1e-6         6.8e-7         missed  caught (4.2e-7 / 2.2e-7)
bert-text-classification  1e-12   1e-5 (*)     6.7e-6         missed  caught (4.1e-6 / 2.2e-7)
bert-text-classification  1e-12   1e-4         6.6e-5         missed  caught (4.1e-5 / 2.2e-7)
bert-text-classification  1e-12   1e-3         5.6e-4         caught  caught
bert-text-classification  1e-12   1e-1 (**)    1.1e-2         caught  caught
bart-with-past            1e-5    1e-12 (*)    9.1e-3         caught  3.9e-3 / 2.8e-6
bart-with-past            1e-5    1e-1 (**)    4.6            caught  caught
========================  ======  ===========  =============  ======  =====================

(*) the ``layernorm-epsilon-default`` variant, (**) ``layernorm-epsilon-gross``. The relative
effect matches the estimate (BERT, var ~1.2e-3: 1e-6 / 2.4e-3 = 4e-4, measured 3.4e-4). An
epsilon error of ~1e-4 of the variance it is added to (BERT 1e-12 -> 1e-7) stays under both
bounds, and 1e-12 -> 1e-9 moves nothing beyond float32 rounding: such changes are numerically
invisible, and harmless. From ~1e-3 of the variance on (1e-12 -> 1e-6) both catch it on
hidden states. The realistic mistake (1e-5 for 1e-12 or 1e-6) is caught on every tiny model by
the noise bound, but by the old fixed bound only where the outputs are large enough: the BERT
classifier's logits (|logits| < 4e-2) move by 6.7e-6, under the old bound 1e-4 (a strict
xfail in the tests). On a real checkpoint the effect depends on the
variance at each norm's input (the embedding LayerNorm is the most sensitive);
``run_corpus(folder, task)`` measures it. On the real all-MiniLM-L6-v2 (BERT, 6 layers,
``.real-models/minilm``, feature-extraction) the realistic mistake 1e-12 -> 1e-5 is caught:
max error 3.6e-3 against a noise bound of 1.3e-4 (27x), and 1.4e-3 against the old bound
1.0e-4 (13x). The corpus there caught 6 of 6 under both criteria (2026-11-30, this machine).

Real checkpoints measured with ``run_corpus`` (2026-11-30, this machine):

- all-MiniLM-L6-v2 (``.real-models/minilm``, feature-extraction): caught 6 of 6 under the noise
  bound and 6 of 6 under the old fixed bound; the narrowest margins are the epsilon mistake
  (27x and 13x), every other variant is caught by 2e3x or more.
- SmolLM2-135M-Instruct (llama, ``.real-models/smollm2``, a GGUF file, text-generation-with-past):
  caught 9 of 9 under the noise bound, the narrowest the epsilon mistake 1e-5 -> 1e-12 (max
  error 4.6e-2 against a bound of 9.2e-4, 50x; every other variant 6e3x or more). Under the
  old fixed bound the *unbroken* export already fails (logits 9.3e-4 against 1e-4 at the decode
  shape set), so the corpus cannot be judged there: ``run_corpus`` refuses with RuntimeError.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import attrs
import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from onnxspec.errors import ValidationError
from onnxspec.catalog.models import REGISTRY
from onnxspec.pieces.patches import Patch
from onnxspec.pipeline.core import export, load_model, plan, resolve_spec
from onnxspec.pieces.shapes import DTypes, Shapes
from onnxspec.pieces.spec import GraphSpec, ModelSpec, with_tolerance
from onnxspec.pieces.tasks import read_config_json
from onnxspec.judge.validate import validate
from onnxspec.build.wrappers import graph_module

__all__ = [
    "CRITERIA",
    "KINDS",
    "VARIANTS",
    "Broken",
    "Judgement",
    "Margin",
    "Outcome",
    "Subject",
    "Variant",
    "applicable",
    "caught_margin",
    "export_control",
    "judge",
    "load_subject",
    "make_broken",
    "run_corpus",
    "subject_label",
    "tiny_live_folder",
    "validate_files",
]

CRITERIA = ("default", "fixed-1e-4")
"""How a broken graph is judged: ``default`` is whatever criterion the spec gives its outputs in
this tree (a fixed tolerance before the validation redesign, a noise bound after it);
``fixed-1e-4`` is the old criterion, ``|onnx - torch| <= 1e-4 + 1e-3 |torch|``."""

OLD_ATOL, OLD_RTOL = 1e-4, 1e-3

EPSILON_DEFAULT_MISTAKE = 1e-5
EPSILON_GROSS = 1e-1


# --------------------------------------------------------------------------------------------
# The subject: a model folder, resolved the way pipeline.export resolves it
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Subject:
    """A model folder and everything the variants and the judge need about it."""

    folder: str
    task: str
    label: str
    spec: ModelSpec
    model: torch.nn.Module = attrs.field(eq=False, repr=False)
    graphs: tuple[GraphSpec, ...] = attrs.field(eq=False, repr=False)
    shapes: Shapes = Shapes()
    dtypes: DTypes = DTypes()
    seed: int = 0

    def sub(self, filename: str) -> GraphSpec:
        return next(sub for sub in self.graphs if sub.filename == filename)


def subject_label(model_type: str, task: str) -> str:
    """``llama-with-past``, ``bert-text-classification``: the model part of a variant's id."""
    return f"{model_type}-with-past" if task.endswith("-with-past") else f"{model_type}-{task}"


def load_subject(folder: str | os.PathLike[str], task: str, *, label: str | None = None) -> Subject:
    """Resolve ``folder``'s spec for ``task`` and load its model, as ``pipeline.export`` does
    (a transformers checkpoint, or a folder holding one GGUF file)."""
    folder = os.fspath(folder)
    try:
        from onnxspec.pipeline.loading import config_from_json, load_source_model, read_source
    except ImportError:  # before onnxspec.pipeline.loading: transformers checkpoints only
        import transformers

        config_json = read_config_json(folder)
        config = transformers.AutoConfig.for_model(**{k: v for k, v in config_json.items() if k != "auto_map"})
        spec = resolve_spec(config_json["model_type"], config, task, REGISTRY, inferred_from=config_json)
        model = load_model(folder, spec.task)
    else:
        source = read_source(folder)
        config_json = source.config_json
        spec = resolve_spec(config_json["model_type"], config_from_json(config_json), task, REGISTRY, inferred_from=config_json)
        model = load_source_model(source, spec.task)
    if spec.attn_implementation is not None and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(spec.attn_implementation)
    return Subject(
        folder=folder, task=task, label=label or subject_label(spec.model_type, task), spec=spec, model=model,
        graphs=plan(spec, merged=False),
    )


# --------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------


class Margin(NamedTuple):
    """The worst check of a validation: its error against its bound (``inf`` for a shape or
    non-finite failure, which no bound covers)."""

    error: float
    bound: float
    graph: str
    output: str
    shape_set: str
    problem: str

    @property
    def ratio(self) -> float:
        return self.error / self.bound if self.bound > 0 else math.inf

    def __str__(self) -> str:
        where = f"{self.graph} {self.output} at {self.shape_set}"
        if math.isinf(self.error):
            return f"{where}: {self.problem or 'not comparable'}"
        return f"{where}: max error {self.error:.1e} against a bound of {self.bound:.1e} ({self.ratio:.2g}x)"


def _error_and_bound(check: Any) -> tuple[float, float]:
    error = getattr(check, "error", None)
    bound = getattr(check, "bound", None)
    if error is None or (isinstance(error, float) and math.isnan(error)):
        error = check.max_abs
    if bound is None or (isinstance(bound, float) and math.isnan(bound)):
        bound = check.atol
    error = float(error)
    if math.isnan(error):  # a shape or non-finite failure: no bound covers it
        error = math.inf
    return error, float(bound)


def caught_margin(checks: Sequence[Any]) -> Margin | None:
    """The worst of ``checks`` (OutputCheck records) by error / bound; failing checks first.

    Reads ``error`` / ``bound`` where the checks have them (the noise-bound criterion), else
    ``max_abs`` / ``atol``. ``None`` when there is no check.
    """
    best: tuple[tuple[int, float], Margin] | None = None
    for check in checks:
        error, bound = _error_and_bound(check)
        margin = Margin(error, bound, check.graph, check.output, check.shape_set, getattr(check, "problem", ""))
        key = (0 if check.passed else 1, margin.ratio)
        if best is None or key > best[0]:
            best = (key, margin)
    return None if best is None else best[1]


@attrs.frozen(kw_only=True)
class Judgement:
    """A broken export judged under one criterion: per-graph verdicts and the worst check."""

    caught: bool
    graphs: Mapping[str, bool]
    checks: tuple[Any, ...]
    problems: tuple[str, ...]
    note: str = ""

    @property
    def margin(self) -> Margin | None:
        return caught_margin(self.checks)

    def __str__(self) -> str:
        verdict = "caught" if self.caught else "NOT caught"
        margin = self.margin
        extra = f"; {self.problems[0]}" if self.problems else ""
        return f"{verdict}: {margin}{extra}" if margin else f"{verdict}{extra}"


def _session(path: str) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _judged_spec(sub: GraphSpec, criterion: str) -> GraphSpec:
    if criterion == "default":
        return sub
    if criterion == "fixed-1e-4":
        return with_tolerance(sub, OLD_ATOL, OLD_RTOL)
    raise ValueError(f"unknown criterion {criterion!r}; one of {CRITERIA}")


def validate_files(subject: Subject, files: Mapping[str, str], criterion: str = "default", *, every: bool = True) -> Judgement:
    """Validate the graph files ``{filename: path}`` of ``subject`` as the pipeline does.

    A graph is caught when one of its checks fails or validation reports a problem. With
    ``every`` the judgement is caught when every graph given is (edited graphs: each was made
    wrong on its own); else when any is (the graphs of a patched export, as ``export`` judges).
    """
    checks: list[Any] = []
    problems: list[str] = []
    verdicts: dict[str, bool] = {}
    for filename, path in files.items():
        sub = _judged_spec(subject.sub(filename), criterion)
        module = graph_module(subject.model, sub)
        found, found_problems, _seconds = validate(
            _session(path), module, sub, subject.shapes, subject.dtypes, subject.seed, filename
        )
        checks += found
        problems += found_problems
        verdicts[filename] = bool(found_problems) or any(not c.passed for c in found)
    combine = all if every else any
    return Judgement(caught=bool(verdicts) and combine(verdicts.values()), graphs=verdicts, checks=tuple(checks),
                     problems=tuple(problems))


# --------------------------------------------------------------------------------------------
# ONNX graph surgery
# --------------------------------------------------------------------------------------------


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def _constant_value(graph: onnx.GraphProto, name: str, producers: Mapping[str, onnx.NodeProto] | None = None) -> np.ndarray | None:
    """The value of ``name`` if it is an initializer or the output of a Constant node."""
    inits = _initializers(graph)
    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = (producers or _producers(graph)).get(name)
    if node is not None and node.op_type == "Constant":
        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
    return None


def _fresh(graph: onnx.GraphProto, base: str) -> str:
    taken = (
        {t.name for t in graph.initializer} | {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
        | {n.name for n in graph.node}
    )
    k = 0
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def _add_initializer(graph: onnx.GraphProto, base: str, array: np.ndarray) -> str:
    name = _fresh(graph, base)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def _rewire_consumers(graph: onnx.GraphProto, old: str, new: str, *, skip: Sequence[onnx.NodeProto] = ()) -> int:
    """Make every node reading ``old`` (but those in ``skip``) read ``new``; the count rewired."""
    count = 0
    for node in graph.node:
        if any(node is s for s in skip):
            continue
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
                count += 1
    return count


def _input_elem_type(graph: onnx.GraphProto, name: str) -> int:
    return next(v.type.tensor_type.elem_type for v in graph.input if v.name == name)


def _numpy_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))


def edit_position_ids(graph: onnx.GraphProto) -> str | None:
    """``position_ids + 1`` inside the graph (see the module docstring); what was changed."""
    if any(v.name == "position_ids" for v in graph.input):
        dtype = _numpy_dtype(_input_elem_type(graph, "position_ids"))
        one = _add_initializer(graph, "broken_one", np.array(1, dtype=dtype))
        shifted = _fresh(graph, "broken_position_ids")
        node = helper.make_node("Add", ["position_ids", one], [shifted], name=_fresh(graph, "broken_position_add"))
        if not _rewire_consumers(graph, "position_ids", shifted):
            return None
        graph.node.insert(0, node)
        return "position_ids + 1 after the graph input"
    inits = _initializers(graph)
    gathers = [
        n for n in graph.node
        if n.op_type == "Gather" and n.input[0] in inits and "position" in n.input[0].lower() and inits[n.input[0]].dims
        and len(inits[n.input[0]].dims) == 2
    ]
    changed = []
    for gather in gathers:
        index = list(graph.node).index(gather)
        as_long = _fresh(graph, "broken_position_index")
        shifted = _fresh(graph, "broken_position_index_plus_one")
        one = _add_initializer(graph, "broken_one", np.array(1, dtype=np.int64))
        cast = helper.make_node("Cast", [gather.input[1]], [as_long], to=onnx.TensorProto.INT64, name=_fresh(graph, "broken_cast"))
        add = helper.make_node("Add", [as_long, one], [shifted], name=_fresh(graph, "broken_add"))
        gather.input[1] = shifted
        graph.node.insert(index, add)
        graph.node.insert(index, cast)
        changed.append(gather.input[0])
    return f"+ 1 on the indices into {', '.join(sorted(set(changed)))}" if changed else None


MASK_INPUTS = ("attention_mask", "encoder_attention_mask", "decoder_attention_mask")


def edit_attention_mask(graph: onnx.GraphProto) -> str | None:
    """Every consumer of an attention mask input reads ones of its shape instead."""
    done = []
    for name in MASK_INPUTS:
        if not any(v.name == name for v in graph.input):
            continue
        dtype = _numpy_dtype(_input_elem_type(graph, name))
        shape = _fresh(graph, f"broken_{name}_shape")
        ones = _fresh(graph, f"broken_{name}_ones")
        nodes = [
            helper.make_node("Shape", [name], [shape], name=_fresh(graph, "broken_shape")),
            helper.make_node("ConstantOfShape", [shape], [ones], value=numpy_helper.from_array(np.ones(1, dtype=dtype)),
                             name=_fresh(graph, "broken_ones")),
        ]
        if _rewire_consumers(graph, name, ones):
            for node in reversed(nodes):
                graph.node.insert(0, node)
            done.append(name)
    return f"{', '.join(done)} replaced by ones" if done else None


def _present_outputs(graph: onnx.GraphProto) -> list[str]:
    return [o.name for o in graph.output if o.name.startswith("present.")]


def _reroute_outputs(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> bool:
    """Make graph output ``out`` return what ``mapping[out]`` returned (Identity nodes)."""
    producers = _producers(graph)
    if any(name not in producers for name in {*mapping, *mapping.values()}):
        return False
    renamed = {name: _fresh(graph, f"{name}__correct") for name in {*mapping, *mapping.values()}}
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renamed:
                node.output[i] = renamed[name]
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for name in {*mapping, *mapping.values()}:
        source = mapping.get(name, name)
        graph.node.append(helper.make_node("Identity", [renamed[source]], [name], name=_fresh(graph, "broken_identity")))
    return True


def edit_cache_swap(graph: onnx.GraphProto) -> str | None:
    """``present.0.key`` returns layer 0's values and ``present.0.value`` its keys (for a
    seq2seq, the decoder's self-attention cache)."""
    outputs = set(_present_outputs(graph))
    for key, value in (("present.0.key", "present.0.value"), ("present.0.decoder.key", "present.0.decoder.value")):
        if key in outputs and value in outputs:
            return f"{key} <-> {value}" if _reroute_outputs(graph, {key: value, value: key}) else None
    return None


def edit_cache_shift(graph: onnx.GraphProto) -> str | None:
    """``present.i.*`` returns layer ``i + 1``'s (the last layer returns layer 0's)."""
    import re

    pattern = re.compile(r"^present\.(\d+)\.(.+)$")
    by_suffix: dict[str, list[int]] = {}
    for name in _present_outputs(graph):
        m = pattern.match(name)
        if m:
            by_suffix.setdefault(m.group(2), []).append(int(m.group(1)))
    mapping = {}
    for suffix, layers in by_suffix.items():
        layers = sorted(layers)
        if len(layers) < 2:
            continue
        for i, layer in enumerate(layers):
            mapping[f"present.{layer}.{suffix}"] = f"present.{layers[(i + 1) % len(layers)]}.{suffix}"
    if not mapping:
        return None
    return f"{len(mapping)} present outputs shifted by one layer" if _reroute_outputs(graph, mapping) else None


def _linear_biases(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, int, str]]:
    """``(node, input index, initializer)`` of every Linear bias: Add(MatMul, bias) or Gemm's C."""
    inits = _initializers(graph)
    producers = _producers(graph)
    found = []
    for node in graph.node:
        if node.op_type == "Gemm" and len(node.input) == 3 and node.input[2] in inits:
            found.append((node, 2, node.input[2]))
        elif node.op_type == "Add" and len(node.input) == 2:
            for i in (0, 1):
                bias, other = node.input[i], node.input[1 - i]
                producer = producers.get(other)
                if bias in inits and producer is not None and producer.op_type == "MatMul":
                    found.append((node, i, bias))
    return [
        (n, i, b) for n, i, b in found
        if numpy_helper.to_array(inits[b]).squeeze().ndim == 1 and numpy_helper.to_array(inits[b]).dtype.kind == "f"
    ]


def _is_key_bias(node: onnx.NodeProto, bias: str) -> bool:
    text = f"{node.name} {bias}".lower()
    return any(k in text for k in ("k_proj", "/key/", ".key.", "key_proj", "/k/", "attention.k."))


def edit_bias(graph: onnx.GraphProto) -> str | None:
    """Zero the largest-norm Linear bias (not a key projection's) in its node only."""
    inits = _initializers(graph)
    candidates = [(n, i, b) for n, i, b in _linear_biases(graph) if not _is_key_bias(n, b)]
    if not candidates:
        return None
    node, i, bias = max(candidates, key=lambda c: float(np.linalg.norm(numpy_helper.to_array(inits[c[2]]))))
    array = numpy_helper.to_array(inits[bias])
    if not np.any(array):
        return None  # an all-zero bias: dropping it changes nothing
    node.input[i] = _add_initializer(graph, "broken_zero_bias", np.zeros_like(array))
    return f"bias {bias} of {node.name or node.op_type} zeroed (norm {np.linalg.norm(array):.2g})"


def _norm_epsilons(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, int | None, float]]:
    """``(node, None, eps)`` per LayerNormalization; ``(add, input index, eps)`` per
    ``ReduceMean -> Add(eps)`` of an RMSNorm or a decomposed LayerNorm."""
    producers = _producers(graph)
    found: list[tuple[onnx.NodeProto, int | None, float]] = []
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"):
            eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5)
            found.append((node, None, float(eps)))
        elif node.op_type == "Add" and len(node.input) == 2:
            for i in (0, 1):
                other = producers.get(node.input[1 - i])
                if other is None or other.op_type != "ReduceMean":
                    continue
                value = _constant_value(graph, node.input[i], producers)
                if value is not None and value.size == 1 and value.dtype.kind == "f" and 0 < float(value.reshape(-1)[0]) < 1e-2:
                    found.append((node, i, float(value.reshape(-1)[0])))
    return found


def graph_epsilon(graph: onnx.GraphProto) -> float | None:
    """The norm epsilon the graph uses (the first one found)."""
    found = _norm_epsilons(graph)
    return found[0][2] if found else None


def realistic_wrong_epsilon(eps: float) -> float:
    """The framework default 1e-5 where the config says otherwise, else BERT's 1e-12."""
    return 1e-12 if math.isclose(eps, EPSILON_DEFAULT_MISTAKE, rel_tol=1e-3) else EPSILON_DEFAULT_MISTAKE


def edit_epsilon(graph: onnx.GraphProto, wrong: float | Callable[[float], float]) -> str | None:
    """Replace every norm epsilon by ``wrong`` (a value, or a function of the right one)."""
    found = _norm_epsilons(graph)
    if not found:
        return None
    before = sorted({eps for _, _, eps in found})
    after = set()
    for node, index, eps in found:
        new = float(wrong(eps) if callable(wrong) else wrong)
        after.add(new)
        if index is None:
            for attribute in node.attribute:
                if attribute.name == "epsilon":
                    attribute.f = new
                    break
            else:
                node.attribute.append(helper.make_attribute("epsilon", new))
        else:
            value = _constant_value(graph, node.input[index])
            node.input[index] = _add_initializer(graph, "broken_epsilon", np.full(value.shape, new, dtype=value.dtype))
    return f"{len(found)} norm epsilons {', '.join(f'{e:.3g}' for e in before)} -> {', '.join(f'{e:.3g}' for e in sorted(after))}"


_PASS_THROUGH = ("Add", "Identity", "Reshape", "Mul", "Div", "Cast", "Squeeze", "Unsqueeze", "Softcap", "Tanh")


def _head_node(graph: onnx.GraphProto, output: str = "logits") -> tuple[onnx.NodeProto, int, int] | None:
    """The MatMul / Gemm producing ``output``: ``(node, weight input index, output axis of the weight)``."""
    if not any(o.name == output for o in graph.output):
        return None
    producers = _producers(graph)
    inits = _initializers(graph)
    name = output
    for _ in range(12):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul" and node.input[1] in inits:
            return node, 1, -1
        if node.op_type == "Gemm" and node.input[1] in inits:
            trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
            return node, 1, 0 if trans_b else 1
        if node.op_type not in _PASS_THROUGH:
            return None
        if node.op_type == "Reshape":  # its data, not the shape it is given (a tied head's Gemm reshaped back)
            name = node.input[0]
            continue
        dynamic = [i for i in node.input if i and i not in inits and producers.get(i) is not None and producers[i].op_type != "Constant"]
        if len(dynamic) != 1:
            return None
        name = dynamic[0]
    return None


def edit_head(graph: onnx.GraphProto) -> str | None:
    """Roll the head weight by one along its output axis, in a copy read by the head only."""
    found = _head_node(graph)
    if found is None:
        return None
    node, index, axis = found
    weight = numpy_helper.to_array(_initializers(graph)[node.input[index]])
    rolled = np.roll(weight, 1, axis=axis)
    node.input[index] = _add_initializer(graph, "broken_head_weight", rolled)
    return f"{node.op_type} weight {weight.shape} rolled by one along axis {axis % weight.ndim}"


# --------------------------------------------------------------------------------------------
# Trace-time patches
# --------------------------------------------------------------------------------------------


def _main_output(subject: Subject) -> tuple[str, int] | None:
    """The output and axis the frozen-axis patch slices: ``logits`` or ``last_hidden_state`` of a
    graph calling the model itself; its sequence axis if dynamic, else its batch axis."""
    for sub in subject.graphs:
        if sub.graph.call.module:
            continue
        for t in sub.outputs:
            key = sub.graph.call.result(t.name)  # the model output's key (the spec may rename it)
            if t.name in ("logits", "last_hidden_state") and key.isidentifier():
                axes = t.dynamic_axes
                if 1 in axes and "sequence" in axes[1]:
                    return key, 1
                if 0 in axes:
                    return key, 0
    return None


def frozen_axis_patches(subject: Subject, *, bake: bool = True) -> tuple[Patch, ...]:
    """The frozen-axis patch; ``bake=False`` is its harmless twin (the same wrapper and slice,
    with the length left symbolic), the control that the wrapping alone breaks nothing."""
    found = _main_output(subject)
    if found is None:
        return ()
    key, axis = found

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            out = original(self, *args, **kwargs)
            value = out[key] if isinstance(out, Mapping) or hasattr(out, "keys") else None
            if value is not None:
                length = int(value.shape[axis]) if bake else value.shape[axis]  # int(): a constant in the trace
                out[key] = value.narrow(axis, 0, length)
            return out

        return forward

    what = "frozen to its traced size" if bake else "sliced to its own size (harmless)"
    return (Patch(target=type(subject.model), attribute="forward", wrap=wrap, reason=f"broken: {key} axis {axis} {what}"),)


def _rotary_classes(model: torch.nn.Module) -> list[type]:
    return sorted({type(m) for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")}, key=lambda c: c.__qualname__)


def rotary_patches(subject: Subject, *, bake: bool = True) -> tuple[Patch, ...]:
    """The rotary patch; ``bake=False`` is its harmless twin (the same wrapper, positions
    passed through), the control that the wrapping alone breaks nothing."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def forward(self: torch.nn.Module, x: torch.Tensor, position_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if bake:
                table = int(position_ids.shape[-1])  # the traced length, a constant in the trace
                position_ids = position_ids.clamp(max=table - 1)
            return original(self, x, position_ids, *args, **kwargs)

        return forward

    return tuple(
        Patch(target=cls, attribute="forward", wrap=wrap, reason="broken: cos/sin table of the traced length only")
        for cls in _rotary_classes(subject.model)
    )


# --------------------------------------------------------------------------------------------
# The variants
# --------------------------------------------------------------------------------------------

Edit = Callable[[onnx.GraphProto], "str | None"]


@attrs.frozen(kw_only=True)
class Variant:
    """One way to break an export: a trace-time patch (``patches``) or a graph edit (``edit``)."""

    name: str
    kind: str
    how: str
    description: str
    patches: Callable[[Subject], tuple[Patch, ...]] | None = None
    edit: Edit | None = None
    requires: Callable[[Subject], bool] = lambda subject: True

    def __attrs_post_init__(self) -> None:
        if (self.patches is None) == (self.edit is None):
            raise ValueError(f"variant {self.name}: give exactly one of patches= or edit=")


KINDS = (
    "frozen axis",
    "rotary positions beyond the trace length",
    "swapped or shifted cache",
    "position ids off by one",
    "ignored attention mask",
    "dropped bias",
    "wrong norm epsilon",
    "wrong head weights",
)

VARIANTS: tuple[Variant, ...] = (
    Variant(name="frozen-axis", kind=KINDS[0], how="trace-patch", patches=frozen_axis_patches,
            description="main output sliced to its traced size on the sequence (else batch) axis"),
    Variant(name="rotary-beyond-trace", kind=KINDS[1], how="trace-patch", patches=rotary_patches,
            description="rotary cos/sin table of the traced length: positions past it read its last row"),
    Variant(name="cache-key-value-swapped", kind=KINDS[2], how="onnx-edit", edit=edit_cache_swap,
            description="present.0.key and present.0.value (decoder self-attention) swapped"),
    Variant(name="cache-layers-shifted", kind=KINDS[2], how="onnx-edit", edit=edit_cache_shift,
            description="present.i.* returns layer i+1's cache"),
    Variant(name="position-ids-off-by-one", kind=KINDS[3], how="onnx-edit", edit=edit_position_ids,
            description="position_ids + 1 (or + 1 on the learned position table's indices)"),
    Variant(name="attention-mask-ignored", kind=KINDS[4], how="onnx-edit", edit=edit_attention_mask,
            description="attention mask inputs replaced by ones inside the graph"),
    Variant(name="bias-dropped", kind=KINDS[5], how="onnx-edit", edit=edit_bias,
            description="the largest Linear bias (not a key projection's) zeroed"),
    Variant(name="layernorm-epsilon-default", kind=KINDS[6], how="onnx-edit",
            edit=functools.partial(edit_epsilon, wrong=realistic_wrong_epsilon),
            description="norm epsilon replaced by the framework default 1e-5 (1e-12 where the config says 1e-5)"),
    Variant(name="layernorm-epsilon-gross", kind=KINDS[6], how="onnx-edit",
            edit=functools.partial(edit_epsilon, wrong=EPSILON_GROSS),
            description=f"norm epsilon replaced by {EPSILON_GROSS:g}"),
    Variant(name="head-rows-permuted", kind=KINDS[7], how="onnx-edit", edit=edit_head,
            description="head weight rolled by one along its output axis"),
)

BY_NAME = {v.name: v for v in VARIANTS}


@contextlib.contextmanager
def _scratch(prefix: str = "onnxspec-broken-") -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _graph_paths(folder: str, subject: Subject) -> dict[str, str]:
    return {s.filename: os.path.join(folder, s.filename) for s in subject.graphs}


def _save(model: onnx.ModelProto, path: str) -> None:
    if model.ByteSize() > 1_800_000_000:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)


def edited_graphs(
    variant: Variant, control: Mapping[str, str], workdir: str, graphs: Sequence[str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Apply ``variant``'s edit to each control graph it applies to (among ``graphs``, default
    all); write the edited ones to ``workdir``. Returns ``({filename: edited path}, {filename:
    what was changed})``."""
    assert variant.edit is not None
    paths, notes = {}, {}
    for filename, path in control.items():
        if graphs is not None and filename not in graphs:
            continue
        model = onnx.load(path)
        note = variant.edit(model.graph)
        if note is None:
            continue
        out = os.path.join(workdir, filename)
        _save(model, out)
        paths[filename], notes[filename] = out, note
    return paths, notes


def applicable(subject: Subject, control: Mapping[str, str] | None = None) -> list[Variant]:
    """The variants that apply to ``subject`` (a patch variant: it makes patches; an edit
    variant: it changes some graph of the control export ``{filename: path}``)."""
    found = []
    for variant in VARIANTS:
        if variant.patches is not None:
            if variant.patches(subject):
                found.append(variant)
        elif control is not None:
            for path in control.values():
                if variant.edit(onnx.load(path).graph) is not None:
                    found.append(variant)
                    break
    return found


@attrs.frozen(kw_only=True)
class Broken:
    """A broken export: its graph files and, for a patch variant, how ``export`` ended."""

    variant: Variant
    files: Mapping[str, str]
    notes: Mapping[str, str]
    export_raised: type | None = None
    export_report: Any = None
    export_message: str = ""


def make_broken(
    subject: Subject, variant: Variant, control: Mapping[str, str], workdir: str, *, graphs: Sequence[str] | None = None
) -> Broken:
    """Build ``variant``'s broken export of ``subject`` in ``workdir``.

    A patch variant exports with the patched spec: ``export_raised`` is the exception type it
    raised (``ValidationError`` when caught), the files are the kept failed graphs (or the
    written ones when it passed). An edit variant edits the ``control`` graphs (only those of
    ``graphs`` when given).
    """
    if variant.edit is not None:
        files, notes = edited_graphs(variant, control, workdir, graphs)
        return Broken(variant=variant, files=files, notes=notes)
    patches = variant.patches(subject)
    spec = attrs.evolve(subject.spec, patches=subject.spec.patches + patches)
    out = os.path.join(workdir, "onnx")
    raised, report, message = None, None, ""
    try:
        report = export(subject.folder, out, spec=spec, shapes=subject.shapes, dtypes=subject.dtypes, seed=subject.seed)
        where = out
    except ValidationError as e:
        raised, report, message = ValidationError, e.report, str(e)
        where = out + ".onnxspec-failed"
    files = {k: v for k, v in _graph_paths(where, subject).items() if os.path.isfile(v)}
    return Broken(variant=variant, files=files, notes={k: "; ".join(map(repr, patches)) for k in files},
                  export_raised=raised, export_report=report, export_message=message)


def judge(subject: Subject, broken: Broken, criterion: str = "default") -> Judgement:
    """Whether validation under ``criterion`` catches ``broken``.

    A patch variant under the default criterion is judged by the export itself (caught when it
    raised ``ValidationError``); otherwise the broken graphs are validated again
    (:func:`validate_files`).
    """
    if broken.variant.patches is not None and criterion == "default" and broken.export_report is not None:
        report = broken.export_report
        checks = tuple(c for g in report.graphs for c in g.checks)
        problems = tuple(p for g in report.graphs for p in g.problems)
        return Judgement(caught=broken.export_raised is ValidationError, graphs={g.filename: g.passed is False for g in report.graphs},
                         checks=checks, problems=problems)
    return validate_files(subject, broken.files, criterion, every=broken.variant.edit is not None)


def tiny_live_folder(model_type: str, task: str, folder: str | os.PathLike[str], seed: int = 0) -> str:
    """A tiny random model of ``tests/tiny.py`` whose biases and norm weights are not trivial.

    transformers initialises biases to 0 and norm weights to 1: a dropped bias would change
    nothing, and the exporter merges equal initializers. Here every bias is drawn from
    N(0, 0.1) and every 1-D weight from 1 + N(0, 0.1) (seeded), as in a trained checkpoint.
    """
    from tests.tiny import tiny_model

    model = tiny_model(model_type, task.removesuffix("-with-past"), seed)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=rng) * 0.1)
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + torch.randn(p.shape, generator=rng) * 0.1)
    model.save_pretrained(folder)
    return os.fspath(folder)


class Outcome(NamedTuple):
    """One variant of :func:`run_corpus`: its id, whether it was caught, the worst check."""

    variant: str
    caught: bool
    worst_error: float
    bound: float


def export_control(subject: Subject, workdir: str) -> tuple[Any, dict[str, str]]:
    """Export ``subject`` unbroken into ``workdir/control``: the report and ``{filename: path}``."""
    out = os.path.join(workdir, "control")
    report = export(subject.folder, out, spec=subject.spec, shapes=subject.shapes, dtypes=subject.dtypes, seed=subject.seed)
    return report, _graph_paths(out, subject)


def run_corpus(
    folder: str | os.PathLike[str],
    task: str,
    *,
    criterion: str = "default",
    variants: Sequence[str] | None = None,
    verbose: bool = True,
) -> list[Outcome]:
    """Run every applicable broken variant on a model folder (a tiny model or a real checkpoint).

    The unbroken export must validate first (else the corpus would prove nothing:
    ``RuntimeError``). Returns one :class:`Outcome` per variant, ``(id, caught, worst error,
    its bound)``; prints one line per variant and "broken caught X of N" when ``verbose``. A
    variant that cannot be built on this model (a patch its trace rejects) is printed and left
    out of the outcomes. ``criterion`` is one of :data:`CRITERIA`.
    """
    subject = load_subject(folder, task)
    with _scratch() as workdir:
        try:
            control_report, control = export_control(subject, workdir)
        except ValidationError as e:
            raise RuntimeError(f"{subject.label}: the unbroken export does not validate, so the corpus proves nothing:\n{e}") from e
        control_judgement = validate_files(subject, control, criterion)
        if control_judgement.caught or not control_report.passed:
            raise RuntimeError(f"{subject.label}: the unbroken export fails under {criterion!r}: {control_judgement}")
        chosen = applicable(subject, control)
        if variants is not None:
            chosen = [v for v in chosen if v.name in variants]
        outcomes = []
        unbuilt = []
        for variant in chosen:
            with _scratch() as scratch:
                try:
                    broken = make_broken(subject, variant, control, scratch)
                    verdict = judge(subject, broken, criterion)
                except Exception as e:  # the variant does not fit this model (a patch the trace rejects...)
                    unbuilt.append(variant.name)
                    if verbose:
                        print(f"{subject.label}/{variant.name:40s} could not be built: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    continue
            margin = verdict.margin
            outcome = Outcome(f"{subject.label}/{variant.name}", verdict.caught,
                              margin.error if margin else math.nan, margin.bound if margin else math.nan)
            outcomes.append(outcome)
            if verbose:
                changed = (
                    "; ".join(f"{k}: {v}" for k, v in broken.notes.items()) if variant.edit is not None
                    else "; ".join(dict.fromkeys(broken.notes.values()))
                )
                print(f"{outcome.variant:55s} {verdict}\n{'':55s} (made by {variant.how}: {changed})", flush=True)
        if verbose:
            skipped = f"; {len(unbuilt)} could not be built: {', '.join(unbuilt)}" if unbuilt else ""
            print(f"{subject.label}: broken caught {sum(o.caught for o in outcomes)} of {len(outcomes)} ({criterion}{skipped})", flush=True)
        return outcomes
