"""infergate's own benchmark suite (``make bench``, ``python -m bench``); not part of the installed
distribution (pyproject's package list leaves it out), and free to import anything in the repository.

Layout: :mod:`bench.runner` (the command: runs sections, saves ``bench-out/results/NAME/results.json``,
rewrites BENCHMARKS.md), :mod:`bench.sections` (the :class:`~bench.sections.Section` protocol, the
:class:`~bench.sections.Goal` rows and the registry), :mod:`bench.markdown` (the one BENCHMARKS.md section
writer, the summary table of goals at the top, the shared tables), :mod:`bench.kit` (the shared
skeleton: a fresh registry, servers on loopback, measured load runs, the loopback guard),
:mod:`bench.servers` (server subprocesses), :mod:`bench.models` and :mod:`bench.scenarios`, and one
module per section: ``load``, ``batching``, ``swap``, ``sampling``, ``workers``, ``drift``, ``gpu``.

How to add a section (e.g. ``peers`` or ``hotpath``):

1. Write a module, say ``bench/hotpath.py``, with module-level imports light enough for ``--help``
   (import heavy things inside ``run``), defining::

       def run(args: argparse.Namespace) -> Results: ...      # measure; return a JSON-ready dict
       def render(results: Results) -> str: ...               # the markdown body, pure
       def goals(results: Results) -> list[Goal]: ...         # (figure, measured, value, goal, verdict)
       SECTION = Section("hotpath", "Hot path (issue 13)", run, render, goals, add_arguments)

   ``args`` carries ``work`` and ``results`` (the section's own folders under ``bench-out/``),
   ``duration`` and ``warmup`` (seconds per step), plus the options ``add_arguments(parser)`` added
   (prefix their help with the section name; names must not clash). ``run`` starts its servers with
   :func:`bench.kit.start_gateway` on :func:`bench.kit.fresh_registry` inside an ``ExitStack`` and
   measures with :func:`bench.kit.measure` (loopback targets only), keeping runs as
   ``Measured.to_json()``. Plots it links: list their file names in ``results["plots"]`` and link them
   as ``docs/bench/NAME/FILE``.
2. ``render`` starts with :func:`bench.markdown.header` (``results["meta"]``: the command, the machine and
   its measured state; never write machine facts by hand) and shows ``goals`` with
   :func:`bench.markdown.goal_table`. Use :meth:`Goal.at_least` / :meth:`Goal.at_most` for goals (they go
   into the summary table) and :meth:`Goal.report` for figures without a target.
3. Add ``"hotpath": "bench.hotpath"`` to :data:`bench.sections.REGISTRY` (its place there is its place
   in BENCHMARKS.md), and optionally a ``bench-hotpath`` alias in the Makefile
   (``$(MAKE) bench SECTIONS=hotpath``). Unit-test ``render`` and ``goals`` on a hand-written results
   dict (see tests/unit/test_bench_suite.py).
"""
