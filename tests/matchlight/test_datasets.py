"""Datasets for the replay: the MovieLens reader (bad lines, rating mapping, order) and specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchlight.evaluation.datasets import (
    MAX_EXAMPLES,
    DatasetError,
    dataset_from_spec,
    load_movielens,
    rating_type,
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_bad_lines_are_counted_with_their_line_numbers_and_never_fatal(tmp_path: Path) -> None:
    ratings = _write(
        tmp_path / "u.data",
        [
            "1\t10\t5\t100",  # 1: good
            "1\t11\t4",  # 2: too few fields
            "2\t10\t3\t101\textra",  # 3: too many fields
            "2\t10\tfive\t102",  # 4: rating not a number
            "2\t10\t4\tlater",  # 5: timestamp not a number
            "\t10\t4\t103",  # 6: empty user id
            "3\t \t4\t104",  # 7: empty item id
            "",  # 8: blank: skipped, not bad
            "3\t12\tnan\t105",  # 9: rating not finite
            "3\t12\t2\t106",  # 10: good
        ],
    )
    data = load_movielens(ratings)
    assert data.lines == 9
    assert data.bad == 7
    by_line = {bad.line: bad.reason for bad in data.examples}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 9]
    assert "got 3" in by_line[2]
    assert "got 5" in by_line[3]
    assert "rating 'five' is not a number" in by_line[4]
    assert "timestamp 'later' is not a number" in by_line[5]
    assert by_line[6] == "empty user id"
    assert by_line[7] == "empty item id"
    assert "finite" in by_line[9]
    assert [e["id"] for e in data.events()] == ["ml-1", "ml-10"]
    assert "7 bad lines skipped of 9" in data.describe()
    assert data.summary()["examples"][0] == {"line": 2, "reason": by_line[2]}


def test_only_the_first_examples_are_kept_but_every_bad_line_is_counted(tmp_path: Path) -> None:
    ratings = _write(tmp_path / "u.data", ["x"] * (MAX_EXAMPLES + 5) + ["1\t2\t4\t5"])
    data = load_movielens(ratings)
    assert data.bad == MAX_EXAMPLES + 5
    assert [bad.line for bad in data.examples] == list(range(1, MAX_EXAMPLES + 1))
    assert len(list(data.events())) == 1


def test_ratings_map_to_likes_views_and_dismissals() -> None:
    assert [rating_type(r) for r in (5, 4.5, 4, 3.5, 3, 2.5, 2, 1.5, 1, 0.5)] == [
        "like",
        "like",
        "like",
        "view",
        "view",
        "view",
        "dismiss",
        "dismiss",
        "dismiss",
        "dismiss",
    ]


def test_events_are_in_time_order_with_each_movie_upserted_before_its_first_event(
    tmp_path: Path,
) -> None:
    ratings = _write(
        tmp_path / "u.data",
        [
            "7\t300\t4\t500",
            "8\t200\t3.5\t100",
            "7\t200\t1\t300",
            "9\t300\t5\t300",  # the same second as line 3: the file's order is kept
            "8\t100\t4.5\t50",
        ],
    )
    data = load_movielens(ratings)
    assert data.records == [
        ("item", {"id": "movie-100", "kind": "movie"}),
        (
            "event",
            {"id": "ml-5", "type": "like", "user": "user-8", "item": "movie-100", "ts": 50.0},
        ),
        ("item", {"id": "movie-200", "kind": "movie"}),
        (
            "event",
            {"id": "ml-2", "type": "view", "user": "user-8", "item": "movie-200", "ts": 100.0},
        ),
        (
            "event",
            {"id": "ml-3", "type": "dismiss", "user": "user-7", "item": "movie-200", "ts": 300.0},
        ),
        ("item", {"id": "movie-300", "kind": "movie"}),
        (
            "event",
            {"id": "ml-4", "type": "like", "user": "user-9", "item": "movie-300", "ts": 300.0},
        ),
        (
            "event",
            {"id": "ml-1", "type": "like", "user": "user-7", "item": "movie-300", "ts": 500.0},
        ),
    ]


def test_the_ml_1m_and_csv_formats_are_read_too(tmp_path: Path) -> None:
    dat = _write(tmp_path / "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109", "bad"])
    data = load_movielens(dat)
    assert [(e["item"], e["type"]) for e in data.events()] == [
        ("movie-1193", "like"),
        ("movie-661", "view"),
    ]
    assert [(b.line, b.reason) for b in data.examples] == [
        (3, "expected 4 fields (user, item, rating, timestamp) separated by '::', got 1")
    ]
    csv_dir = tmp_path / "latest"
    csv_dir.mkdir()
    _write(
        csv_dir / "ratings.csv",
        ["userId,movieId,rating,timestamp", "1,31,2.5,1260759144", "1,1029,3.0,1260759179"],
    )
    data = load_movielens(csv_dir)  # a directory: its ratings file is found
    assert data.bad == 0
    assert data.lines == 2  # the header is not a data line
    assert [e["type"] for e in data.events()] == ["view", "view"]


def test_genres_beside_the_ratings_become_item_terms(tmp_path: Path) -> None:
    _write(tmp_path / "u.data", ["1\t1\t5\t10", "1\t2\t4\t20"])
    flags = ["0"] * 19
    toy, thriller = list(flags), list(flags)
    toy[3] = toy[4] = toy[5] = "1"  # Animation, Children's, Comedy
    thriller[16] = "1"
    (tmp_path / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(toy)}\n"
        f"2|GoldenEye (1995)|01-Jan-1995||http://y|{'|'.join(thriller)}\n",
        encoding="latin-1",
    )
    data = load_movielens(tmp_path / "u.data")
    assert {item["id"]: item.get("terms") for item in data.items()} == {
        "movie-1": {"genre": ["animation", "children's", "comedy"]},
        "movie-2": {"genre": ["thriller"]},
    }
    assert data.genres == "u.item"


def test_a_missing_file_or_an_unknown_spec_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_movielens(tmp_path / "nope.data")
    with pytest.raises(DatasetError, match="no such file"):
        dataset_from_spec(f"movielens:{tmp_path / 'nope.data'}")
    with pytest.raises(DatasetError, match="no MovieLens ratings in the directory"):
        dataset_from_spec(f"movielens:{tmp_path}")
    with pytest.raises(DatasetError, match="needs a path"):
        dataset_from_spec("movielens:")
    with pytest.raises(DatasetError, match="unknown dataset 'netflix'"):
        dataset_from_spec("netflix")


def test_specs_name_the_synthetic_marketplace_and_movielens_files(tmp_path: Path) -> None:
    synthetic = dataset_from_spec("synthetic", seed=3, consumers=50, pros=20)
    assert synthetic.name == "synthetic"
    assert synthetic.bad == 0
    assert synthetic.lines == sum(1 for _ in synthetic.events()) > 0
    assert (
        synthetic.records == dataset_from_spec("synthetic", seed=3, consumers=50, pros=20).records
    )
    path = _write(tmp_path / "u.data", ["1\t2\t4\t5"])
    movielens = dataset_from_spec(f"movielens:{path}")
    assert movielens.name == f"movielens:{path}"
    assert len(list(movielens.events())) == 1
