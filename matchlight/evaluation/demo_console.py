"""What ``matchlight demo`` prints: its steps on stdout, progress on stderr, a replay's verdict.

Steps and results go to stdout (what ``make demo`` shows); progress, which
only says the demo is still working, goes to stderr prefixed with ``…``.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from matchlight.evaluation.report import LABELS, SYSTEMS, cohort_rows, format_cohorts


def say(message: str) -> None:
    """A line of the demo's story, on stdout."""
    print(message, flush=True)


def progress(message: str) -> None:
    """A progress line, indented under the current step, on stderr."""
    print(f"   … {message}", file=sys.stderr, flush=True)


def print_replay(results: Mapping[str, Any], k: int) -> None:
    """A replay on the terminal: its cohort table, what each system is, and the verdict."""
    say(format_cohorts(results["cohort_table"], k))
    legend = "; ".join(f"{s}: {LABELS[s]}" for s in SYSTEMS)
    say(textwrap.fill(legend, width=100, initial_indent="   ", subsequent_indent="   "))
    for sentence in verdict(results, k).splitlines():
        say(f"   {sentence}")


def verdict(results: Mapping[str, Any], k: int) -> str:
    """Real time against the batch, then against the best simple baseline: a line each."""
    rows = cohort_rows(results)
    hit = f"hit_rate@{k}"

    def cell(row: str, system: str) -> Mapping[str, Any]:
        found: Mapping[str, Any] = rows[row]["systems"][system]
        return found

    best = rows["all"]["best_baseline"]
    sentences = [
        f"real time hits {cell('all', 'realtime')[hit]:.1%} of next choices, the nightly batch "
        f"{cell('all', 'batch')[hit]:.1%}; for users who arrived after the nightly run "
        f"{cell('new', 'realtime')[hit]:.1%} vs {cell('new', 'batch')[hit]:.1%}."
    ]
    if best is not None:
        ratios = [cell(row, "realtime")["ratio_to_best_baseline"] for row in ("all", "<10")]
        shown = ["-" if r is None else f"{r:.2f}x" for r in ratios]
        sentences.append(
            f"The best simple real-time baseline, {LABELS[best]}, hits "
            f"{cell('all', best)[hit]:.1%}: real time is {shown[0]} it overall and {shown[1]} "
            "for users with < 10 events (the project's bar: 1.2x)."
        )
    return "\n".join(sentences)
