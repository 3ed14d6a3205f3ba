// Run with node by test_layout_runtimes.py: greedy generation through transformers.js from a
// folder written with --layout transformers.js, loaded from disk only (local_files_only).
//
//   node transformers_js_side.mjs MODULE FOLDER CLASS DTYPE EXAMPLES NEW_TOKENS
//
// MODULE: transformers.js' dist/transformers.node.mjs; CLASS: AutoModelForCausalLM,
// AutoModelForSeq2SeqLM, AutoModelForSpeechSeq2Seq or AutoModelForVision2Seq; DTYPE: fp32, fp16,
// q8 ... (the file suffix transformers.js picks); EXAMPLES: a JSON list of {input name: {type,
// dims, data}}, each generated alone. Prints the generated sequences as JSON.
import path from 'node:path';

const [, , modulePath, folder, cls, dtype, examples, newTokens] = process.argv;
const tjs = await import(modulePath);
tjs.env.allowRemoteModels = false;
tjs.env.localModelPath = path.dirname(path.resolve(folder));
const model = await tjs[cls].from_pretrained(path.basename(folder), { local_files_only: true, dtype, device: 'cpu' });
const arrays = { int64: (d) => BigInt64Array.from(d.map(BigInt)), float32: (d) => Float32Array.from(d) };
const sequences = [];
for (const example of JSON.parse(examples)) {
  const inputs = {};
  for (const [name, t] of Object.entries(example)) inputs[name] = new tjs.Tensor(t.type, arrays[t.type](t.data), t.dims);
  const out = await model.generate({ ...inputs, max_new_tokens: +newTokens, min_new_tokens: +newTokens, do_sample: false });
  sequences.push(Array.from(out.data, Number));
}
console.log(JSON.stringify(sequences));
