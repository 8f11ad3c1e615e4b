"""infergate's load harness: honest open- and closed-loop KServe V2 gRPC load, ceilings, reports and plots.

The data path of a run: :mod:`loadtests.cli` -> :class:`loadtests.config.LoadConfig` ->
:func:`loadtests.run.run_load` (payloads serialized once by :mod:`loadtests.payload`; client processes
from :mod:`loadtests.pool` run :mod:`loadtests.unary` or :mod:`loadtests.stream`, recording into
:mod:`loadtests.recorder`) -> :mod:`loadtests.figures` -> :mod:`loadtests.report` and
:mod:`loadtests.plots`. Ceilings: :mod:`loadtests.ortceiling` and :mod:`loadtests.echo`. ``make bench``:
:mod:`loadtests.bench`. This package imports only protos, registry (to read reference samples and
signatures), numpy, grpc, onnxruntime (the ceiling), matplotlib and tqdm, plus onnx in the build-time
:mod:`loadtests.bench_models`; never the gateway.
"""
