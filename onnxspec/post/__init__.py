"""After the export: transformations of an export folder that are re-validated against PyTorch
(quantization, graph optimization, fp16) and the folder layouts other runtimes load unchanged
(transformers.js, onnxruntime-genai). Builds on everything below it but the command line."""
