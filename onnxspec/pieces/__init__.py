"""The pieces every spec is composed from: tensor and axis specs, shapes and dtypes, config
normalizers, dummy-input generators, cache layouts and names, patches, judging criteria, tasks,
and the spec records with the pure functions over them. Pieces import nothing else of onnxspec
but :mod:`onnxspec.errors`."""
