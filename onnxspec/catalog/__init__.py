"""What onnxspec knows about models: the config normalizers, the families that compose pieces
into specs, the registry machinery, and the model entries. The catalog builds on
:mod:`onnxspec.pieces` only."""
