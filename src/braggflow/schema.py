"""The peak table: its columns, their dtypes and units, and the flag bits.

This module is the single source of truth for the peak table described in
``docs/design.md``.  Every stage adds columns from :data:`COLUMNS`; none renames
them.  A test keeps the table in ``README.md`` and this module in sync.

The peak table is a :class:`pandas.DataFrame` with one row per peak per frame,
in the spirit of trackpy's feature tables.  An empty result is an empty table
with these dtypes (:func:`empty_peak_table`), never ``None``.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Column",
    "COLUMNS",
    "Flag",
    "empty_peak_table",
    "new_peak_table",
    "new_peak_columns",
    "conform",
    "conformed_columns",
    "table_from_columns",
    "cast_columns",
    "validate_peak_table",
    "describe_flags",
    "FRAME_COLUMNS",
    "HIT_MIN_PEAKS",
    "frames_table",
]


class Flag(enum.IntFlag):
    """Bits of the ``flags`` column (uint32).

    A peak may carry several flags; ``flags == 0`` means nothing to report.
    """

    EDGE = 1 << 0
    """The peak's patch reaches past the detector edge (padded, not dropped)."""
    SATURATED = 1 << 1
    """At least one pixel of the peak is at or above the saturation level."""
    MASKED_NEIGHBOUR = 1 << 2
    """A masked pixel lies inside the peak's patch."""
    OVERLAPPING = 1 << 3
    """Pixels of another peak were inside the patch and were removed."""
    FIT_FAILED = 1 << 4
    """The localizer's fit or network failed; ``locate`` gives the position of the patch's centre of mass (method
    ``com``), NaN only where that fails too."""
    LOW_SNR = 1 << 5
    """Integrated intensity below three times its error."""
    BAD_BACKGROUND = 1 << 6
    """Too few pixels to estimate the local background."""
    OUT_OF_RANGE = 1 << 7
    """A geometry or phase value could not be computed for this peak."""
    BLENDED = 1 << 8
    """One of two peaks fitted together as a blend (one region split by a two-component fit, chosen over one
    component by the likelihood ratio); each member has its own position, intensity and errors."""
    SUMMED = 1 << 9
    """Profile integration was asked for but the profile did not describe the peak (fit failed, poor fit, or a
    region larger than the fit's window): ``intensity`` is the background-subtracted sum."""
    PROBABLE_BLEND = 1 << 10
    """Probably two unresolved peaks, not split: two components lower the Poisson deviance by more than
    ``braggflow.locate.deblend.RECOGNITION_THRESHOLD`` (<= 1 % of single peaks of each kind) but not by the
    split's threshold, or not placed to be split; the one-peak centre and errors are not to be trusted."""


@dataclass(frozen=True)
class Column:
    """One column of the peak table.

    Attributes
    ----------
    name : str
        Column name (frozen: never renamed).
    dtype : str
        pandas dtype string.
    unit : str
        Physical unit as a UDUNITS string, as NeXus files carry it ("degree", "pixel",
        "angstrom", "1/angstrom", "counts", "s"; "" for dimensionless).
    description : str
        One-line meaning.
    default : object
        Fill value for rows a stage has not reached yet.
    """

    name: str
    dtype: str
    unit: str
    description: str
    default: object


_NAN = float("nan")

COLUMNS: dict[str, Column] = {
    c.name: c
    for c in [
        Column("frame", "int64", "", "index of the frame in its series", 0),
        Column("omega", "float64", "degree", "rotation angle at the frame's centre, NaN when the series has none",
               _NAN),
        Column("source_file", "category", "",
               "file the frame was read from, relative to the inputs' common folder (missing: frames from an array)",
               None),
        Column("frame_in_file", "int64", "", "index of the frame inside source_file, -1 when unknown", -1),
        Column("row", "float64", "pixel", "sub-pixel peak centre, numpy axis 0; pixel centres are integers", _NAN),
        Column("col", "float64", "pixel", "sub-pixel peak centre, numpy axis 1; pixel centres are integers", _NAN),
        Column("row_err", "float64", "pixel", "1-sigma uncertainty of row", _NAN),
        Column("col_err", "float64", "pixel", "1-sigma uncertainty of col", _NAN),
        Column("rc_cov", "float64", "pixel^2", "row-col covariance of the centre (0 where the method gives none)", 0.0),
        Column("sigma_row", "float64", "pixel", "peak width along rows (Gaussian sigma or equivalent)", _NAN),
        Column("sigma_col", "float64", "pixel", "peak width along columns (Gaussian sigma or equivalent)", _NAN),
        Column("peak_value", "float64", "counts", "highest pixel value", _NAN),
        Column("intensity", "float64", "counts", "background-subtracted integrated intensity", _NAN),
        Column("intensity_err", "float64", "counts", "1-sigma error of intensity", _NAN),
        Column("background", "float64", "counts", "local background level", _NAN),
        Column("snr", "float64", "", "intensity / intensity_err", _NAN),
        Column("score", "float64", "",
               "the finder's score: detection SNR (find.method components), persistence in counts (persistence), "
               "or intensity / intensity_err (learned)",
               _NAN),
        Column("npix", "int64", "", "pixels in the peak's region", 0),
        Column("method", "category", "", "localization method used", None),
        Column("flags", "uint32", "", "bit mask of braggflow.schema.Flag", 0),
        Column("track_id", "int64", "", "trajectory id after linking, -1 unlinked", -1),
        Column("two_theta", "float64", "degree", "scattering angle", _NAN),
        Column("eta", "float64", "degree", "azimuthal angle (pyFAI's chi)", _NAN),
        Column("q", "float64", "1/angstrom", "momentum transfer 4 pi sin(theta) / lambda", _NAN),
        Column("q_xy", "float64", "1/angstrom", "in-plane momentum transfer (signed), grazing incidence", _NAN),
        Column("q_z", "float64", "1/angstrom", "out-of-plane momentum transfer, positive above the sample horizon",
               _NAN),
        Column("d", "float64", "angstrom", "d-spacing 2 pi / q", _NAN),
        Column("two_theta_err", "float64", "degree", "1-sigma error of two_theta, propagated from the centre", _NAN),
        Column("q_err", "float64", "1/angstrom", "1-sigma error of q, propagated from the centre", _NAN),
        Column("d_err", "float64", "angstrom", "1-sigma error of d, propagated from the centre", _NAN),
        Column("phase", "category", "", "assigned phase after identification (missing: unassigned)", None),
        Column("h", "Int32", "", "Miller index h of the assigned reflection", pd.NA),
        Column("k", "Int32", "", "Miller index k of the assigned reflection", pd.NA),
        Column("l", "Int32", "", "Miller index l of the assigned reflection", pd.NA),
        Column("kind", "category", "", "feature kind of the learned finder: spot, arc or ring (missing: other finders)",
               None),
        Column("confidence", "float64", "", "the learned finder's confidence, 0-1 (NaN: other finders)", _NAN),
        Column("q_width", "float64", "1/angstrom", "full radial extent of the learned finder's feature box", _NAN),
        Column("chi_width", "float64", "degree", "full azimuthal extent of the learned finder's feature box", _NAN),
    ]
}


def _column_values(col: Column, n: int):
    """Default values of one column for ``n`` rows (a NumPy or pandas array)."""
    if col.dtype == "category":
        # the dtype of pd.Categorical([None] * n): no categories (float64 ones when n > 0), every value missing
        return pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8), dtype=_empty_categorical_dtype(n > 0),
                                         validate=False)  # every code -1 (missing): nothing to check
    if col.dtype == "Int32":
        return pd.arrays.IntegerArray(np.ones(n, dtype=np.int32), np.ones(n, dtype=bool))  # all missing
    return np.full(n, col.default, dtype=col.dtype)


@functools.lru_cache(maxsize=2)
def _empty_categorical_dtype(rows: bool) -> pd.CategoricalDtype:
    """The categorical dtype of ``pd.Categorical([None] * n)``: n > 0 (``rows``) or n = 0."""
    return pd.Categorical([None] if rows else []).dtype


def _cast_values(col: Column, values):
    """``values`` cast to the column's dtype (a NumPy or pandas array)."""
    if col.dtype == "category":
        return (
            values.array if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype) else pd.Categorical(values)
        )
    if col.dtype == "Int32":
        return pd.array(values, dtype="Int32")
    if isinstance(values, (pd.Series, pd.Index)) and not isinstance(values.dtype, np.dtype):
        return values.astype(col.dtype).to_numpy()  # pandas raises on NA -> int itself
    values = np.asarray(values)
    if np.dtype(col.dtype).kind in "iu" and values.dtype.kind == "f" and not np.isfinite(values).all():
        raise ValueError(f"non-finite values cannot be stored as {col.dtype}")
    return values.astype(col.dtype, copy=False)


_NAMES = tuple(COLUMNS)


def _block_layout(columns: dict[str, Column]) -> tuple[list, list]:
    """How a frame of ``columns`` is built from blocks: one 2D block per NumPy dtype, one per extension column.

    Returns ``numpy_blocks``, a list of (dtype, placement, names, defaults)
    (placement: the columns' positions; defaults: their default values, of
    that dtype), and ``extension_blocks``, a list of (name, placement).
    """
    numpy_blocks: dict[str, list[tuple[int, str]]] = {}
    extension_blocks = []
    for i, (name, col) in enumerate(columns.items()):
        if col.dtype in ("category", "Int32"):
            extension_blocks.append((name, np.array([i], dtype=np.intp)))
        else:
            numpy_blocks.setdefault(col.dtype, []).append((i, name))
    layout = []
    for dtype, members in numpy_blocks.items():
        names = tuple(name for _, name in members)
        defaults = np.array([columns[name].default for name in names], dtype=dtype)
        layout.append((np.dtype(dtype), np.array([i for i, _ in members], dtype=np.intp), names, defaults))
    return layout, extension_blocks


#: the blocks of a frame built here (:func:`_frame_from_columns`)
_NUMPY_BLOCKS, _EXTENSION_BLOCKS = _block_layout(COLUMNS)
#: the block and the row in it of each NumPy column
_NUMPY_ROW = {name: (b, k) for b, (_, _, names, _) in enumerate(_NUMPY_BLOCKS) for k, name in enumerate(names)}

try:  # pandas >= 2.3: a frame from its blocks, without the per-column checks of pd.DataFrame(dict) (~5 x faster)
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pragma: no cover - older pandas
    _from_blocks = None


def _schema_dtype_matches(dtype, expected: str) -> bool:
    """Whether a column's dtype is the schema dtype ``expected`` (a dtype string), without formatting it."""
    if expected == "category":
        return isinstance(dtype, pd.CategoricalDtype)
    if expected == "Int32":
        return isinstance(dtype, pd.Int32Dtype)
    return isinstance(dtype, np.dtype) and dtype == _numpy_dtype(expected)


@functools.lru_cache(maxsize=32)
def _numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a schema dtype string (made once)."""
    return np.dtype(name)


def _frame_from_columns(data: dict, n: int) -> pd.DataFrame:
    """A DataFrame of the schema's columns, in order, from ``data`` ({name: array of length n}).

    Every extension column (``category``, ``Int32``) must be in ``data``, as
    the array the table keeps; a NumPy column missing from ``data`` takes its
    default.  The NumPy columns are copied (cast to the schema dtype) into one
    2D block per dtype: ~10 blocks instead of one per column, which is what a
    frame costs to build.
    """
    if _from_blocks is None:
        return pd.DataFrame({name: data[name] if name in data else _column_values(col, n)
                             for name, col in COLUMNS.items()})
    return _from_layout(data, n, _NUMPY_BLOCKS, _EXTENSION_BLOCKS, _column_index())


def _from_layout(data: dict, n: int, numpy_blocks: list, extension_blocks: list, columns: pd.Index) -> pd.DataFrame:
    """A DataFrame of ``n`` rows built from the blocks of :func:`_block_layout` (see :func:`_frame_from_columns`)."""
    blocks = []
    for dtype, placement, names, defaults in numpy_blocks:
        values = np.empty((len(names), n), dtype=dtype)
        given = [(k, data[name]) for k, name in enumerate(names) if name in data]
        if len(given) < len(names):
            values[...] = defaults[:, None]
        for k, column in given:
            values[k] = column  # a copy, as pd.DataFrame makes
        blocks.append((values, placement))
    for name, placement in extension_blocks:
        blocks.append((data[name], placement))
    return _from_blocks(blocks, index=pd.RangeIndex(n), columns=columns)


@functools.lru_cache(maxsize=1)
def _column_index() -> pd.Index:
    """The schema's column names as a pandas Index (shared by the tables built here; an Index is immutable)."""
    return pd.Index(_NAMES)


def new_peak_table(n: int = 0, **values) -> pd.DataFrame:
    """Make a peak table of ``n`` rows, every column present with its default.

    Parameters
    ----------
    n : int
        Number of rows.
    **values : array_like of length n
        Initial values for named columns; they are cast to the schema dtype.

    Returns
    -------
    table : pandas.DataFrame, (n rows, all of :data:`COLUMNS`)

    Raises
    ------
    KeyError
        If a keyword is not a column of the schema.
    ValueError
        If a value's length is not ``n``.
    """
    data = _given_columns(n, values)
    # the extension columns not given are made here; the NumPy ones take their defaults as the table is built
    for name, _ in _EXTENSION_BLOCKS:
        if name not in data:
            data[name] = _column_values(COLUMNS[name], n)
    return _frame_from_columns(data, n)


def new_peak_columns(n: int = 0, **values) -> dict:
    """The columns of ``new_peak_table(n, **values)`` as arrays, without building the table.

    Parameters
    ----------
    n : int
        Number of rows.
    **values : array_like of length n
        Initial values for named columns; they are cast to the schema dtype.

    Returns
    -------
    columns : dict of str to array
        Every schema column, in order, with its dtype (NumPy arrays, and pandas
        extension arrays for ``category`` and ``Int32``): the arrays
        :func:`conformed_columns` gives for that table, which
        :func:`table_from_columns` turns into it.  A value given as an array
        of the schema's dtype is that array, not a copy.

    Raises
    ------
    KeyError
        If a keyword is not a column of the schema.
    ValueError
        If a value's length is not ``n``.
    """
    data = _given_columns(n, values)
    # the NumPy columns not given: rows of one array of defaults per dtype (three arrays, not thirty)
    defaults = [np.repeat(block_defaults[:, None], n, axis=1) for _, _, _, block_defaults in _NUMPY_BLOCKS]
    out = {}
    for name, col in COLUMNS.items():
        if name in data:
            out[name] = data[name]
        elif name in _NUMPY_ROW:
            block, row = _NUMPY_ROW[name]
            out[name] = defaults[block][row]
        else:
            out[name] = _column_values(col, n)
    return out


def _given_columns(n: int, values: dict) -> dict:
    """The columns given to :func:`new_peak_table`, checked and cast to their schema dtypes."""
    for name in values:
        if name not in COLUMNS:
            raise KeyError(f"{name!r} is not a peak-table column; known: {', '.join(COLUMNS)}")
    data = {}
    for name, v in values.items():
        if np.ndim(v) == 0:
            v = [v] * n
        if len(v) != n:
            raise ValueError(f"column {name!r} has {len(v)} values, expected {n}")
        data[name] = _cast_values(COLUMNS[name], v)
    return data


def empty_peak_table() -> pd.DataFrame:
    """Return an empty peak table with every schema column and dtype.

    Returns
    -------
    table : pandas.DataFrame, (0 rows, all of :data:`COLUMNS`)
    """
    return new_peak_table(0)


def conform(table: pd.DataFrame) -> pd.DataFrame:
    """Return ``table`` with every schema column present and cast to its dtype.

    Missing columns are added with their defaults; extra columns are kept at the
    end (stages may add documented columns of their own).  The row order and
    index are reset to 0..n-1.

    Parameters
    ----------
    table : pandas.DataFrame

    Returns
    -------
    table : pandas.DataFrame

    Raises
    ------
    ValueError
        If a column cannot be cast to its schema dtype.
    """
    n = len(table)
    if not isinstance(table.index, pd.RangeIndex) or table.index.start != 0 or table.index.step != 1:
        table = table.reset_index(drop=True)
    if _conforms(table):  # the common case between stages, ~50x cheaper
        return table.copy(deep=False)
    out = {}
    for name, col in COLUMNS.items():
        if name in table.columns:
            s = table[name]
            if str(s.dtype) == col.dtype:
                out[name] = s.array
                continue
            try:
                out[name] = _cast_values(col, s)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"peak-table column {name!r} cannot be cast to {col.dtype}: {exc}") from exc
        else:
            out[name] = _column_values(col, n)
    for c in table.columns:
        if c not in COLUMNS:
            out[c] = table[c].array
    return pd.DataFrame(out, copy=False)


def conformed_columns(table: pd.DataFrame) -> dict:
    """The columns of ``conform(table)`` as arrays, without making a Series per column.

    A stage that replaces or grows several columns reads them here, works on
    the arrays and builds its result once with :func:`table_from_columns`.

    Parameters
    ----------
    table : pandas.DataFrame

    Returns
    -------
    columns : dict of str to array
        Name to NumPy array or pandas extension array (``category``,
        ``Int32``): every schema column in order, with its dtype, then the extra
        columns.  The arrays may be the table's own memory: read them, never
        write into them.

    Raises
    ------
    ValueError
        If a column cannot be cast to its schema dtype (see :func:`conform`).
    """
    arrays = _column_arrays(table)
    names = table.columns
    k = len(COLUMNS)
    if names is _column_index():
        keys = _NAMES
    else:
        keys = tuple(names.tolist())
        if keys[:k] != _NAMES:
            arrays = None
    if arrays is not None and not all(_schema_dtype_matches(a.dtype, col.dtype)
                                      for a, col in zip(arrays, COLUMNS.values())):
        arrays = None
    if arrays is None:
        table = conform(table)
        arrays, keys = _column_arrays(table), tuple(table.columns.tolist())
    return dict(zip(keys, arrays))


def _column_arrays(table: pd.DataFrame) -> list:
    """The columns of ``table`` as arrays (NumPy or pandas extension arrays), in order, without making Series."""
    get = getattr(table, "_get_column_array", None)  # pandas' own accessor, ~20x cheaper than table[name]
    if get is not None:
        return [get(i) for i in range(table.shape[1])]
    columns = (table.iloc[:, i] for i in range(table.shape[1]))
    return [c.to_numpy() if isinstance(c.dtype, np.dtype) else c.array for c in columns]


def table_from_columns(columns: dict, n: int) -> pd.DataFrame:
    """A peak table built at once from column arrays (the inverse of :func:`conformed_columns`).

    Parameters
    ----------
    columns : dict of str to array
        Every schema column, in the order of :data:`COLUMNS`, then any extra
        columns; each of length ``n``.  Every array is copied (cast to its
        schema dtype), as ``pd.DataFrame(columns)`` copies.
    n : int
        Number of rows.

    Returns
    -------
    table : pandas.DataFrame
        ``n`` rows, index 0..n-1; the same table as ``pd.DataFrame(columns)``
        conformed.

    Raises
    ------
    ValueError
        If the schema columns are missing or out of order, or a column's length is not ``n``.
    """
    data = cast_columns(columns, n)
    for name, values in data.items():
        if values is columns[name] and not isinstance(values, np.ndarray):
            data[name] = values.copy()  # the table must not share an extension array with its source
    if len(data) == len(COLUMNS):
        return _frame_from_columns(data, n)
    return pd.DataFrame(data, index=pd.RangeIndex(n))


def cast_columns(columns: dict, n: int) -> dict:
    """Column arrays with every schema column cast to its dtype, as :func:`table_from_columns` stores them.

    A stage that hands its columns to the next one without building a table
    (:func:`braggflow.locate.locate_columns`, :func:`braggflow.integrate.integrate_columns`)
    passes them through here, so that the next stage reads the values a table would hold.

    Parameters
    ----------
    columns : dict of str to array
        Every schema column, in the order of :data:`COLUMNS`, then any extra
        columns; each of length ``n``.
    n : int
        Number of rows.

    Returns
    -------
    columns : dict of str to array
        A new dict: the arrays whose dtype is the schema's as given (not
        copied), the others cast.

    Raises
    ------
    ValueError
        If the schema columns are missing or out of order, a column's length
        is not ``n``, or a column cannot be cast to its schema dtype.
    """
    if tuple(columns)[:len(COLUMNS)] != _NAMES:
        raise ValueError("columns must start with every peak-table column, in the schema's order")
    data = {}
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values, expected {n}")
        col = COLUMNS.get(name)
        # a NumPy dtype of the schema is the one instance NumPy keeps of it: identity says most columns match
        same = values.dtype is _NUMPY_DTYPES.get(name)
        if col is not None and not same and not _schema_dtype_matches(values.dtype, col.dtype):
            values = _cast_values(col, values)
        data[name] = values
    return data


#: The NumPy dtype of each schema column that has one.
_NUMPY_DTYPES = {name: np.dtype(col.dtype) for name, col in COLUMNS.items() if col.dtype not in ("category", "Int32")}


def _conforms(table: pd.DataFrame) -> bool:
    """Whether the table's first columns are the schema's, in order, with their dtypes."""
    k = len(COLUMNS)
    columns = table.columns
    if not (columns is _column_index() or columns.equals(_column_index())):  # else: extra columns at the end?
        names = columns.tolist()
        if len(names) < k or tuple(names[:k]) != _NAMES:
            return False
    return all(_schema_dtype_matches(dtype, col.dtype) for dtype, col in zip(table.dtypes.tolist(), COLUMNS.values()))


def validate_peak_table(table: pd.DataFrame, *, required: tuple[str, ...] = ("frame", "row", "col")) -> None:
    """Check that ``table`` is a peak table usable by a later stage.

    Parameters
    ----------
    table : pandas.DataFrame
    required : tuple of str
        Columns that must be present.

    Raises
    ------
    TypeError
        If ``table`` is not a DataFrame.
    ValueError
        If a required column is missing; the message names it.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a peak table (pandas.DataFrame), got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"peak table lacks required column(s) {', '.join(missing)}")


def describe_flags(flags: int) -> list[str]:
    """Names of the flag bits set in ``flags``.

    Parameters
    ----------
    flags : int
        Value of the ``flags`` column.

    Returns
    -------
    names : list of str
        Lower-case names, e.g. ``["edge", "saturated"]``.
    """
    return [f.name.lower() for f in Flag if int(flags) & int(f)]


#: Default of the hit rule (the frames table's ``hit``: at least this many peaks; config ``frames.hit_min_peaks``):
#: OM's example monitors (LCLS CXI, Pilatus files) set min_num_peaks_for_hit 10.
HIT_MIN_PEAKS = 10

#: Columns of the frames table (``/entry/frames`` of a results file): one row per processed frame.
FRAME_COLUMNS: dict[str, Column] = {
    c.name: c
    for c in [
        Column("frame", "int64", "", "index of the frame in its series", 0),
        Column("omega", "float64", "degree", "rotation angle at the frame's centre, NaN when the series has none",
               _NAN),
        Column("source_file", "category", "",
               "file the frame was read from, relative to the inputs' common folder (missing: frames from an array)",
               None),
        Column("frame_in_file", "int64", "", "index of the frame inside source_file, -1 when unknown", -1),
        Column("n_peaks", "int64", "", "peaks reported for the frame", 0),
        Column("background", "float64", "counts", "median of the finder's tile background levels", _NAN),
        Column("noise", "float64", "counts", "median of the finder's tile noise (1 sigma of one background pixel)",
               _NAN),
        Column("saturated", "int64", "", "pixels at or above the saturation level", 0),
        Column("zingers", "int64", "", "candidate regions dropped as zingers", 0),
        Column("hot_pixels", "int64", "", "hot pixels masked (the series' hot-pixel map)", 0),
        Column("thresholded", "bool", "",
               "the finder took the frame for thresholded upstream (a frame cache, a sparse file): its noise comes "
               "from the storage threshold, and locate.deblend leaves it out", False),
        Column("time", "float64", "s", "processing time of the frame (correct to integrate)", _NAN),
        Column("hit", "bool", "", "the frame is a hit: n_peaks >= the hit rule's minimum (frames.hit_min_peaks)",
               False),
        Column("latency", "float64", "s",
               "live mode: seconds from the frame's file appearing to its results being journaled; NaN otherwise",
               _NAN),
        Column("frame_class", "category", "",
               "most probable frame class of the learned detector (empty, spots, arcs, rings); missing without one",
               None),
        Column("p_empty", "float64", "", "learned probability that the frame is empty or diffuse only; NaN without one",
               _NAN),
        Column("p_spots", "float64", "", "learned probability of spots (single crystal or textured film)", _NAN),
        Column("p_arcs", "float64", "", "learned probability of arcs (partly textured powder)", _NAN),
        Column("p_rings", "float64", "", "learned probability of full rings (random powder)", _NAN),
    ]
}


def frames_table(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """A frames table with every column of :data:`FRAME_COLUMNS`, in order and with its dtype.

    Parameters
    ----------
    rows : list of dict, or pandas.DataFrame
        One entry per frame; missing columns take their defaults, unknown keys are dropped.

    Returns
    -------
    table : pandas.DataFrame
    """
    if isinstance(rows, pd.DataFrame) and _is_frames_table(rows):  # already one: the same table, not rebuilt
        return rows.copy(deep=False)
    fast = _frames_table_of_rows(rows) if isinstance(rows, list) else None
    if fast is not None:
        return fast
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    n = len(df)
    out = {}
    for name, col in FRAME_COLUMNS.items():
        if name not in df:
            out[name] = _column_values(col, n)
        elif col.dtype == "category":
            out[name] = _cast_values(col, df[name])
        else:
            out[name] = df[name].to_numpy(dtype=col.dtype)
    return _frames_frame(out, n)


def _is_frames_table(table: pd.DataFrame) -> bool:
    """Whether ``table`` is a frames table as :func:`frames_table` makes it: its columns in order, each with its
    dtype, nothing else, and the index 0..n-1."""
    index = table.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        return False
    names = _frame_blocks()[2]
    if not (table.columns is names or table.columns.equals(names)):
        return False
    return all(_schema_dtype_matches(dtype, col.dtype) for dtype, col in zip(table.dtypes.tolist(),
                                                                              FRAME_COLUMNS.values()))


def _frames_frame(data: dict, n: int) -> pd.DataFrame:
    """The frames table of ``data`` (every column of :data:`FRAME_COLUMNS`, in order, with its dtype), built from
    one block per NumPy dtype as :func:`_frame_from_columns` builds a peak table; the same table as
    ``pd.DataFrame(data)``."""
    if _from_blocks is None:
        return pd.DataFrame(data)
    return _from_layout(data, n, *_frame_blocks())


@functools.lru_cache(maxsize=1)
def _frame_blocks() -> tuple[list, list, pd.Index]:
    """The block layout of the frames table and its column names (shared by the tables built here)."""
    return (*_block_layout(FRAME_COLUMNS), pd.Index(tuple(FRAME_COLUMNS)))


def _frames_table_of_rows(rows: list) -> pd.DataFrame | None:
    """:func:`frames_table` of dicts with the same keys and no categorical value, without ``pd.DataFrame(rows)``.

    Each column is made as ``pd.DataFrame(rows)[name].to_numpy(dtype=...)``
    makes it from such rows; None where the rows are not such dicts, or a
    value does not convert (the general path then decides, and raises the
    same errors).
    """
    if not rows or not all(type(r) is dict for r in rows):
        return None
    keys = rows[0].keys()
    if any(r.keys() != keys for r in rows):
        return None
    n = len(rows)
    out = {}
    try:
        for name, col in FRAME_COLUMNS.items():
            if name not in keys:
                out[name] = _column_values(col, n)
            elif col.dtype == "category":
                return None
            else:
                values = [r[name] for r in rows]
                if not all(type(v) in _PLAIN_SCALARS for v in values):
                    return None
                out[name] = np.array(values, dtype=col.dtype)
    except (TypeError, ValueError, OverflowError):
        return None
    return _frames_frame(out, n)


#: Value types that a column of ``pd.DataFrame(rows)`` holds as NumPy values (``float``, ``int``, ``bool``, NumPy
#: numbers): converting them with ``np.array(values, dtype)`` gives what ``to_numpy(dtype)`` gives.
_PLAIN_SCALARS = frozenset({float, int, bool, np.float64, np.float32, np.int64, np.int32, np.bool_})
