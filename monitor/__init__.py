"""The drift-monitoring sidecar: sampled inferences in, PSI and KS per model version and feature out.

Stages of the data path, one module each: ``decode`` (SampleBatch validation), ``catalog`` (versions),
``reference`` and ``features`` (profiles), ``windows``, ``stats`` (numba kernels), ``kolmogorov`` and
``thresholds``, ``drift`` (evaluation), ``decisions`` (state and report), ``history``, ``webhook``,
``metrics``, ``engine``, ``handlers`` and ``app`` (the service), ``__main__`` (the CLI). See
docs/monitor.md. Never imports ``gateway``.
"""
