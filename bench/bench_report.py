"""Targets, verdicts and the printed tables."""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    limit: float
    unit: str
    at_least: bool = False  # True when more is better (throughput)

    def describe(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.limit:g}{self.unit}"

    def met_by(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def verdict(self, value: float) -> str:
        # Relative to the target: a MISS says how far off it is, a PASS how much room is left.
        margin = abs(value - self.limit) / self.limit * 100
        if self.met_by(value):
            return f"PASS ({margin:.0f}% {'above' if self.at_least else 'under'})"
        return f"MISS (by {margin:.0f}%)"


TARGETS = {
    "sequential_p50_ms": Target(0.5, " ms"),
    "sequential_p99_ms": Target(1.5, " ms"),
    "throughput_ratio": Target(0.9, " × bare", at_least=True),
    "concurrent_p99_ms": Target(12, " ms"),
    "cold_save_and_run_p50_ms": Target(60, " ms"),
    "cold_burst_save_and_run_p50_ms": Target(60, " ms"),
    "rss_per_worker_mib": Target(4, " MiB"),
}


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    target: str = ""
    verdict: str = ""


def judged(label: str, value: float, key: str, fmt: str = ".3f") -> Row:
    return judged_by(label, value, TARGETS[key], fmt)


def judged_by(label: str, value: float, target: Target, fmt: str = ".3f") -> Row:
    return Row(label, f"{value:{fmt}}{target.unit}", target.describe(), target.verdict(value))


def table(title: str, rows: Sequence[Row]) -> str:
    """A Markdown table: readable in a terminal and pasteable into docs/benchmarks.md as is."""
    cells = [("Figure", "Value", "Target", "Verdict")] + [
        (r.label, r.value, r.target, r.verdict) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return f"\n### {title}\n\n" + "\n".join(lines)
