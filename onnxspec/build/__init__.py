"""Turning a spec and a PyTorch model into ONNX graphs: the module wrappers a graph traces, the
torch exporters (TorchScript and dynamo), and the merging of decoders into one graph. Builds on
:mod:`onnxspec.pieces`."""
