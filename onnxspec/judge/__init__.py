"""Proving a graph right: the float64 reference run, validation against PyTorch with
onnxruntime (or onnx's reference evaluator), and the report records. Builds on
:mod:`onnxspec.pieces` and :mod:`onnxspec.build`."""
