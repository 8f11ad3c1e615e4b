"""Goal (e) of the ``hotpath`` section, overload: its scenarios, servers, figures and goals (pure: reads
only the saved results of :mod:`bench.hotpath`; :mod:`bench.hotpath_overload_md` renders its table).

Contracts:

* Two scenarios (:data:`SCENARIOS`): ``tiny`` (one row per call: the server's cost is gRPC's and Python's
  per call) and ``mlp32`` (32 rows of ``mlp`` per call: the server's cost is onnxruntime's compute, and
  capacity is low enough that one client core can offer 4x). Servers (:data:`SERVERS`): the gateway with
  its defaults, the gateway ``tuned`` for overload (:func:`tuned_flags`: transport push-back sized from the
  scenario's capacity, one fresh gateway per scenario, its flags kept in the entry's ``flags``), and, on
  ``tiny`` only, the echo server as a reference without a goal.
* ``results["overload"][scenario][server]`` = ``{"capacity_rps", "capacity_from", "probes": [run label],
  "rounds": [{"steps": {factor: run label}, "before": probe label, "after": probe label}], "rss_kib":
  [...]}``, the tuned entry also ``"flags"``. A round's rates are ``factor`` x its ``rate_rps``, the
  probe just before it (``before``); rounds saved without ``rate_rps`` ran at ``factor`` x
  ``capacity_rps``, the highest of ``probes``, in every round, which offered 2.02-2.36x (4.04-4.74x)
  of the capacity their rounds were divided by (runs at 22a0da4 and 45e45f7): a maximum of noisy
  probes is biased high. :func:`offered_factor` is what a step offered ÷ its round's capacity.
  A round's capacity is the mean of the probes just before and after it (:func:`round_capacity`), and a
  goal reads the median over rounds of goodput ÷ that (:func:`goodput_ratio`): the host's speed moves by
  a third within minutes, so a step divided by the highest of probes taken minutes apart measured the
  host's spread as much as the server (0.76 of the highest probe at 9d11e04 was 1.04 of the lowest).
  Every round's ratio is in the table, so a round that stalled shows. Entries saved before rounds
  have ``steps`` ({factor: run label}) and, the tuned one, ``after`` instead of ``rounds``; they divide
  their one step by :func:`capacity`, as they were judged then.
* "Beyond the deadline" is the largest latency of a step, OK or not, measured by the client from the
  intended send time, minus the budget; a fast refusal is an error answered within :data:`FAST_MS` (read
  off the step's ``error_cdf``, so a share is exact to the grid's quantile). A step whose send lag p99
  exceeds :data:`LAG_MS` measured the client, not the server: the table and the note say so.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from bench.kit import Measured, ratio, round_runs
from bench.markdown import fmt
from bench.sections import Goal, Results

__all__ = [
    "BUDGET_MS",
    "FACTORS",
    "SCENARIOS",
    "SERVERS",
    "LEGACY_TUNED_FLAGS",
    "PROBES",
    "ROUNDS",
    "beyond_deadline",
    "capacity",
    "goodput_ratio",
    "offered_factor",
    "round_capacity",
    "round_ratios",
    "fast_share",
    "FAST_MS",
    "LAG_MS",
    "flags_of",
    "entry_of",
    "overload_goals",
    "present",
    "probe_rate",
    "probe_rps",
    "send_lag",
    "step_labels",
    "step_of",
    "stream_cap",
    "tuned_flags",
]

BUDGET_MS = 50.0
#: Closed-loop capacity probes per server and scenario before its steps (:mod:`bench.hotpath`); the
#: highest is the entry's ``capacity_rps`` (and sizes the tuned gateway's streams), the last sets the
#: first round's rates.
PROBES = 3
#: Rounds of 2x and 4x per gateway and scenario, each followed by one probe (module contract). Five, so
#: that the median is the third of five: in the runs with three, one round in six read 0.56-0.71 of
#: capacity where the others read 0.74-0.95 (a slower moment of the shared host between its probes), and
#: one such round with one on the line decided a goal.
ROUNDS = 5
FAST_MS = 10.0
#: Send lag p99 (ms) above which the client is said to have fallen behind its schedule.
LAG_MS = 10.0
FACTORS = (2, 4)
#: Goodput ÷ capacity wanted at each factor.
TARGETS = {2: 0.8, 4: 0.7}
#: Overload scenarios: key -> (label, model, rows per call, closed-loop probe concurrency).
SCENARIOS: dict[str, tuple[str, str, int, int]] = {
    "tiny": ("tiny, 1 row per call", "tiny", 1, 64),
    "mlp32": ("mlp, 32 rows per call", "mlp", 32, 16),
}
#: The flags the tuned gateway ran with before streams were sized per scenario (results saved before then
#: carry no ``flags`` and are rendered with these).
LEGACY_TUNED_FLAGS = ("--max-concurrent-streams", "32", "--max-pending-calls", "16", "--max-concurrency", "0")


#: The most streams :func:`stream_cap` gives one connection (see there).
MAX_STREAMS = 64
#: The share of the budget :func:`stream_cap` fills with the calls one connection holds.
BUDGET_SHARE = 0.5


def stream_cap(capacity_rps: float, budget_ms: float) -> int:
    """README "Overload"'s sizing rule for ``--max-concurrent-streams``: the calls the server serves in
    half the budget (:data:`BUDGET_SHARE`), rounded down to a power of two, at least 1 and at most
    :data:`MAX_STREAMS`. Tiny at 2,560-5,119 calls/s: 64; 32-row mlp calls at 320-639/s: 8, at
    640-1,279/s: 16.

    Why half, and 64 (side runs of 5 rounds, two tuned gateways taking turns, rates from the probe
    before each round; medians at 2x / 4x): tiny, 32 against 64 streams 0.84 / 0.74 and 1.03 / 0.96;
    48 against 64 0.88 / 0.85 and 0.84 / 0.90; 32 against 48 0.72 / 0.80 and 0.91 / 0.81. 32-row mlp
    calls, 8 against 16 streams 0.92 / 0.89 and 0.95 / 0.94. Until then the rule took a third of the
    budget and at most 32, after 64 streams collapsed at 4x (0.41 and 0.02 of capacity, at 8f1d822 and
    f522617): that was before gRPC's transport threads shared the core under ``SCHED_BATCH`` with the
    loop's yield (bafc798) and before every pinned gateway's poller got that policy. With 32 streams
    tiny's 2x held no more than ~0.8: a connection held to 32 calls is served at a lower concurrency
    than the closed loop of 64 that its capacity is probed at."""
    calls = capacity_rps * budget_ms / 1000.0 * BUDGET_SHARE
    return min(MAX_STREAMS, 1 << max(0, int(calls).bit_length() - 1)) if calls >= 1 else 1


def tuned_flags(capacity_rps: float, budget_ms: float) -> tuple[str, ...]:
    """The overload configuration README "Overload" recommends, for a scenario's measured capacity: the
    stream cap of :func:`stream_cap` bounds what one connection holds, so excess calls are refused by the
    transport before they cost Python anything; gRPC core's pending limit is as large (it never refuses
    before the streams do: its refusals cost the core about twice as much); the in-process adaptive
    limit is off (its refusals are paid in Python, after the transport's work)."""
    cap = str(stream_cap(capacity_rps, budget_ms))
    return ("--max-concurrent-streams", cap, "--max-pending-calls", cap, "--max-concurrency", "0")


def flags_of(entry: dict[str, Any]) -> tuple[str, ...]:
    """The flags a tuned gateway's overload entry ran with (:data:`LEGACY_TUNED_FLAGS` when unrecorded)."""
    return tuple(entry.get("flags") or LEGACY_TUNED_FLAGS)


#: Overloaded servers: key -> label.
SERVERS = {
    "defaults": "gateway, defaults",
    "tuned": "gateway, tuned for overload",
    "echo": "echo (reference, no goal)",
}


def fast_share(step: dict[str, Any], limit_ms: float = FAST_MS) -> float | None:
    """Share of a step's errors answered within ``limit_ms``; None without errors or an ``error_cdf``."""
    cdf = step.get("error_cdf")
    if not cdf or not sum(step["errors"].values()):
        return None
    within = [
        q
        for q, ms in zip(cdf["quantile"], cdf["latency_ms"], strict=True)
        if ms is not None and ms <= limit_ms
    ]
    return max(within) / 100.0 if within else 0.0


def beyond_deadline(step: dict[str, Any] | None, budget_ms: float) -> float | None:
    """The step's largest latency (OK or error, from the intended send time) minus ``budget_ms``."""
    if step is None:
        return None
    worst = [v for v in (step["latency_ms"]["max"], step["error_latency_ms"]["max"]) if v is not None]
    return max(worst) - budget_ms if worst else None


def step_of(runs: dict[str, Measured], label: str | None) -> dict[str, Any] | None:
    return None if label is None or label not in runs else runs[label].step


def entry_of(results: Results, scenario: str, server: str) -> dict[str, Any]:
    found = ((results.get("overload") or {}).get(scenario) or {}).get(server)
    return dict(found or {"capacity_rps": None, "steps": {}, "rss_kib": []})


def present(results: Results) -> list[tuple[str, str]]:
    """(scenario, server) pairs in table order: every scenario, every server it ran (echo: tiny only)."""
    return [
        (scenario, server)
        for scenario in SCENARIOS
        for server in SERVERS
        if server != "echo" or server in ((results.get("overload") or {}).get(scenario) or {})
    ]


def _rss_growth_mib(rss: list[int | None]) -> float | None:
    return None if len(rss) < 2 or rss[0] is None or rss[-1] is None else (rss[-1] - rss[0]) / 1024


def probe_rps(runs: dict[str, Measured], entry: dict[str, Any], server: str, scenario: str) -> list[float]:
    """Req/s of the capacity probes an entry was offered (its ``probes``; results saved before entries kept
    them: the server's own ``{server}-{scenario}-probe`` rounds), in order."""
    found = [runs[label] for label in entry.get("probes") or () if label in runs]
    found = found or round_runs(runs, f"{server}-{scenario}-probe")
    return [float(run.report["throughput_rps"]) for run in found]


def capacity(entry: dict[str, Any], runs: dict[str, Measured]) -> float | None:
    """What an overload entry's goodput is divided by: the capacity its rates came from, or the probe
    taken after its steps (``after``) when that one is higher, so a host slower while the rates were
    probed cannot flatter the ratio."""
    found = [entry.get("capacity_rps")]
    if entry.get("after") in runs:
        found.append(float(runs[entry["after"]].report["throughput_rps"]))
    return max((v for v in found if v is not None), default=None)


def probe_rate(runs: dict[str, Measured], label: str | None) -> float | None:
    return float(runs[label].report["throughput_rps"]) if label in runs else None


def round_capacity(round_: dict[str, Any], runs: dict[str, Measured]) -> float | None:
    """A round's capacity: the mean of the probes just before and after its steps (those measured)."""
    found = [
        v
        for v in (probe_rate(runs, round_.get("before")), probe_rate(runs, round_.get("after")))
        if v is not None
    ]
    return sum(found) / len(found) if found else None


def offered_factor(round_: dict[str, Any], runs: dict[str, Measured], factor: int) -> float | None:
    """What a round's step at ``factor`` offered (req/s of its Poisson schedule) ÷ :func:`round_capacity`:
    ``factor`` when the host held its speed over the round; None when not measured."""
    step = step_of(runs, round_["steps"].get(str(factor)))
    return None if step is None else ratio(float(step["offered"]), round_capacity(round_, runs))


def round_ratios(entry: dict[str, Any], runs: dict[str, Measured], factor: int) -> list[float | None]:
    """Goodput ÷ :func:`round_capacity` of each round of an entry at ``factor`` (None: not measured)."""
    out: list[float | None] = []
    for round_ in entry.get("rounds") or ():
        step = step_of(runs, round_["steps"].get(str(factor)))
        out.append(None if step is None else ratio(float(step["goodput_rps"]), round_capacity(round_, runs)))
    return out


def goodput_ratio(entry: dict[str, Any], runs: dict[str, Measured], factor: int) -> float | None:
    """What goal (e) judges at ``factor``: the median of :func:`round_ratios` (module contract); an entry
    saved before rounds: its step's goodput ÷ :func:`capacity`. None when nothing was measured."""
    if "rounds" in entry:
        found = [v for v in round_ratios(entry, runs, factor) if v is not None]
        return median(found) if found else None
    step = step_of(runs, (entry.get("steps") or {}).get(str(factor)))
    return None if step is None else ratio(float(step["goodput_rps"]), capacity(entry, runs))


def step_labels(entry: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(factor, round number, step label) of every step of an entry, in the order they ran."""
    if "rounds" in entry:
        return [
            (factor, number, label)
            for number, round_ in enumerate(entry["rounds"], start=1)
            for factor, label in round_["steps"].items()
        ]
    return [(factor, 1, label) for factor, label in (entry.get("steps") or {}).items()]


def send_lag(step: dict[str, Any] | None) -> float | None:
    return None if step is None else (step.get("send_lag_ms") or {}).get("p99")


def _goodput_text(entry: dict[str, Any], runs: dict[str, Measured], factor: int) -> str:
    """The measured column of a goodput goal: every round's ratio (median judged), or the legacy quotient."""
    if "rounds" in entry:
        ratios = round_ratios(entry, runs, factor)
        listed = " / ".join(fmt(v) for v in ratios) or "-"
        return f"rounds {listed} (goodput ÷ the probes around each), median"
    step = step_of(runs, (entry.get("steps") or {}).get(str(factor)))
    good = None if step is None else float(step["goodput_rps"])
    return f"{fmt(good, 0)} ÷ {fmt(capacity(entry, runs), 0)}"


def _gateway_goals(results: Results, runs: dict[str, Measured], scenario: str, server: str) -> list[Goal]:
    o, budget = entry_of(results, scenario, server), float(results["budget_ms"])
    name = f"{SERVERS[server]}, {SCENARIOS[scenario][0]}"
    out = []
    streams = f" ({' '.join(flags_of(o)[:2])})" if server == "tuned" else ""
    labels = step_labels(o)
    for factor in FACTORS:
        lags = [send_lag(step_of(runs, label)) for f, _, label in labels if f == str(factor)]
        lag = max((v for v in lags if v is not None), default=None)
        behind = f" (client behind: send lag p99 {fmt(lag)} ms)" if lag is not None and lag > LAG_MS else ""
        out.append(
            Goal.at_least(
                f"(e) {name}: goodput at {factor}x ÷ capacity (OK within {budget:g} ms per s)",
                f"{_goodput_text(o, runs, factor)}{streams}{behind}",
                goodput_ratio(o, runs, factor),
                TARGETS[factor],
            )
        )
    worst = [beyond_deadline(step_of(runs, label), budget) for _, _, label in labels]
    value = max((w for w in worst if w is not None), default=None)
    out.append(
        Goal.at_most(
            f"(e) {name}: largest latency past the {budget:g} ms deadline, every step "
            "(ms, from intended send)",
            " / ".join(fmt(w) for w in worst) or "-",
            value,
            10,
        )
    )
    rss = o["rss_kib"]
    out.append(
        Goal.at_most(
            f"(e) {name}: RSS growth over the overload steps (MiB)",
            " → ".join(fmt(None if r is None else r / 1024, 1) for r in rss) or "-",
            _rss_growth_mib(rss),
            20,
        )
    )
    return out


def overload_goals(results: Results, runs: dict[str, Measured]) -> list[Goal]:
    """Goal (e) for each gateway in each scenario; the echo server's goodput as a report."""
    out: list[Goal] = []
    for scenario, server in present(results):
        if server != "echo":
            out += _gateway_goals(results, runs, scenario, server)
            continue
        o = entry_of(results, scenario, server)
        for factor in FACTORS:
            out.append(
                Goal.report(
                    f"(e) {SERVERS[server]}, {SCENARIOS[scenario][0]}: goodput at {factor}x ÷ capacity",
                    _goodput_text(o, runs, factor),
                    goodput_ratio(o, runs, factor),
                )
            )
    return out
