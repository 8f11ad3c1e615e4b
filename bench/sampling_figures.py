"""The sampling section's figures and goals (bench/sampling.py runs it), read from its saved results.

Contracts: :class:`Figures` reads closed-loop throughput summed over however many rounds the results hold
(``closed-<name>-r<N>``), with the sampling-off side the mean of the two off gateways where the control
(``closed-offb-r<N>``) was measured, else the one; the monitor-killed comparison reads the two dead rounds
against the off runs around them, or, in results saved before those rounds, the one dead step against the
off step after it. :func:`goals` states every figure with the rounds it sums; :func:`spread_reading` says,
from the measured p99 ratios, whether the two open-loop rounds agree.
"""

from __future__ import annotations

from bench.kit import Measured, measured, ratio
from bench.markdown import fmt
from bench.sections import Goal, Results

__all__ = ["OFF", "Figures", "goals", "spread_reading"]


#: The sampling-off side of every sampling ratio: the mean of the off gateways of each round.
OFF = "off-side"


class Figures:
    """The sampling section's figures, from its saved results."""

    def __init__(self, results: Results) -> None:
        self.runs: dict[str, Measured] = {k: measured(v) for k, v in results["runs"].items()}
        self.rounds = sorted(int(k.rpartition("-r")[2]) for k in self.runs if k.startswith("closed-off-r"))
        legacy = "closed-dead" in self.runs
        self.dead = ["closed-dead"] if legacy else [k for k in self.runs if k.startswith("closed-dead-r")]
        self.after_kill = (
            ["closed-off-after-kill"]
            if legacy
            else [k for k in self.runs if k.startswith("closed-off-after-kill-r")]
        )
        #: The sampling-off gateways measured in every closed round: the control's too, where it ran.
        self.offs = ["closed-off"] + (
            ["closed-offb"] if any(k.startswith("closed-offb-r") for k in self.runs) else []
        )
        self.control = len(self.offs) == 2

    def rps(self, name: str) -> float:
        """Closed-loop req/s of ``name`` summed over the rounds (:data:`OFF`: the off gateways' mean)."""
        return sum(self.round_rps(name, r) for r in self.rounds)

    def round_rps(self, name: str, r: int) -> float:
        if name == OFF:
            return sum(self.rps_of(f"{off}-r{r}") for off in self.offs) / len(self.offs)
        return self.rps_of(f"{name}-r{r}")

    def p99(self, name: str) -> float | None:
        values = [self.runs[f"{name}-r{r}"].lat("p99") for r in (1, 2)]
        return None if None in values else sum(v for v in values if v is not None) / len(values)

    def p99_ratios(self, a: str, b: str) -> list[float | None]:
        return [ratio(self.runs[f"{a}-r{r}"].lat("p99"), self.runs[f"{b}-r{r}"].lat("p99")) for r in (1, 2)]

    def per_round(self, a: str, b: str) -> str:
        return ", ".join(fmt(x) for x in self.p99_ratios(a, b))

    def per_round_rps(self, a: str, b: str) -> str:
        return ", ".join(fmt(ratio(self.round_rps(a, r), self.round_rps(b, r))) for r in self.rounds)

    def rps_of(self, label: str) -> float:
        return float(self.runs[label].report["throughput_rps"])

    def total(self, labels: list[str]) -> float:
        return sum(self.rps_of(label) for label in labels)


def goals(results: Results) -> list[Goal]:
    f, cpu = Figures(results), results["cpu"]
    offs = [f"{off}-r{r}" for off in f.offs for r in f.rounds] + f.after_kill
    dead, after_kill = f.total(f.dead), f.total(f.after_kill)
    p99_off = f.p99("open-off")
    rounds = len(f.rounds)
    control = (
        [
            Goal.report(
                f"control: throughput of the second sampling-off gateway ÷ the first (req/s, sum of {rounds} "
                f"rounds; per round {f.per_round_rps('closed-offb', 'closed-off')})",
                f"{fmt(f.rps('closed-offb'), 0)} ÷ {fmt(f.rps('closed-off'), 0)}",
                ratio(f.rps("closed-offb"), f.rps("closed-off")),
            )
        ]
        if f.control
        else []
    )
    return [
        *control,
        Goal.at_least(
            f"throughput, sampling 100 % ÷ off (req/s, sum of {rounds} rounds; per round "
            f"{f.per_round_rps('closed-100', OFF)})",
            f"{fmt(f.rps('closed-100'), 0)} ÷ {fmt(f.rps(OFF), 0)}",
            ratio(f.rps("closed-100"), f.rps(OFF)),
            0.9,
        ),
        Goal.at_least(
            f"throughput, sampling 5 % ÷ off (req/s, sum of {rounds} rounds; per round "
            f"{f.per_round_rps('closed-5', OFF)}): at most a 3 % cost",
            f"{fmt(f.rps('closed-5'), 0)} ÷ {fmt(f.rps(OFF), 0)}",
            ratio(f.rps("closed-5"), f.rps(OFF)),
            0.97,
        ),
        Goal.at_least(
            "throughput, 100 % with the monitor killed ÷ the sampling-off run"
            + (" right after it (req/s)" if len(f.dead) == 1 else "s around it (req/s, sum of 2 rounds)"),
            f"{fmt(dead, 0)} ÷ {fmt(after_kill, 0)}",
            ratio(dead, after_kill),
            0.95,
        ),
        Goal.report(
            f"throughput, 100 % with the monitor killed ÷ mean of the {len(offs)} sampling-off runs (req/s, "
            "per step)",
            f"{fmt(dead / len(f.dead), 0)} ÷ {fmt(f.total(offs) / len(offs), 0)}",
            ratio(dead / len(f.dead), f.total(offs) / len(offs)),
        ),
        Goal.at_most(
            f"p99, sampling 5 % ÷ off, open loop (ms, mean of 2 rounds; per round "
            f"{f.per_round('open-5', 'open-off')})",
            f"{fmt(f.p99('open-5'))} ÷ {fmt(p99_off)}",
            ratio(f.p99("open-5"), p99_off),
            1.1,
        ),
        Goal.report(
            f"p99, sampling 100 % ÷ off, open loop (ms, mean of 2 rounds; per round "
            f"{f.per_round('open-100', 'open-off')})",
            f"{fmt(f.p99('open-100'))} ÷ {fmt(p99_off)}",
            ratio(f.p99("open-100"), p99_off),
        ),
        Goal.report(
            "monitor CPU µs per sampled row",
            f"{fmt(cpu['monitor_cpu_s'], 3)} s ÷ {fmt(cpu['rows'], 0)} rows",
            ratio(cpu["monitor_cpu_s"] * 1e6, cpu["rows"]),
        ),
    ]


def spread_reading(f: Figures, step_s: float) -> str:
    """Whether the two rounds' open-loop p99 ratios agree, measured, not assumed."""
    spreads = []
    for side in ("open-5", "open-100"):
        a, b = f.p99_ratios(side, "open-off")
        if a is not None and b is not None:
            spreads.append(abs(a - b))
    if not spreads:
        return "the open-loop p99 ratios could not be computed in both rounds."
    worst = max(spreads)
    if worst > 0.1:
        return (
            f"the open-loop p99 ratios differ between rounds by up to {fmt(worst)}, more than the 0.1 "
            f"margin of the goal, so on this machine a stall during a {step_s:g} s step moves its p99 by "
            "more than sampling does: those figures bound the effect rather than resolve it."
        )
    return f"the open-loop p99 ratios of the two rounds agree within {fmt(worst)}."
