"""Run in the onnxruntime-genai venv (benchmarks/.work/genai-venv) by test_layout_runtimes.py:
greedy generation through ``onnxruntime_genai`` from a folder written with ``--layout genai``.

    genai_side.py FOLDER '[[1, 5, 7], [1, 42]]' NEW_TOKENS   ->   prints the full sequences as JSON
"""

import json
import sys

import numpy as np
import onnxruntime_genai as og

folder, prompts, new_tokens = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model = og.Model(folder)  # reads genai_config.json
sequences = []
for ids in prompts:
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([ids], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    sequences.append([int(t) for t in generator.get_sequence(0)])
print(json.dumps(sequences))
