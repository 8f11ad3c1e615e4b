"""infergate's load harness: honest open- and closed-loop KServe V2 gRPC load, ceilings, reports and plots.

The data path of a run: :mod:`loadtests.cli` -> :class:`loadtests.config.LoadConfig` ->
:func:`loadtests.run.run_load` (payloads serialized once by :mod:`loadtests.payload`; client processes
from :mod:`loadtests.pool` run :mod:`loadtests.unary` or :mod:`loadtests.stream`, recording into
:mod:`loadtests.recorder`) -> :mod:`loadtests.figures` -> :mod:`loadtests.report` and
:mod:`loadtests.plots`. Ceilings: :mod:`loadtests.ortceiling` and :mod:`loadtests.echo`. This package
imports only protos, registry (to read reference samples and signatures), numpy, grpc, onnxruntime (the
ceiling), and, only when asked for, matplotlib (plots) and tqdm (progress bars); never the gateway, never
``bench`` (this project's own benchmark suite, which is not installed).
"""
