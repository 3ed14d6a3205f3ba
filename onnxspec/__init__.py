"""onnxspec: export Hugging Face transformers models to ONNX from composable specs, and prove
every export correct against PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
