"""Tables in files: a DataFrame as one HDF5 dataset per column, or as the arrays of a journal batch.

:func:`write_table` and :func:`_read_table` store and restore a table in an
HDF5 group (categories, nullable integers and missing text kept);
:func:`_table_to_npz_dict` and :func:`_table_from_npz` do the same for the
``.npz`` batches of a results file's journal.  A group of tables with
attributes (``/entry/<name>`` of a results file) is read by
:func:`_read_group_obj` and written by :func:`_restore_group`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from braggflow.io.nexus import column_units
from braggflow.schema import conform

__all__ = ["write_table"]


def write_table(group, table: pd.DataFrame) -> None:
    """Write a DataFrame as one 1D dataset per column into an open HDF5 group.

    The layout that :func:`read_table` reads: categories as int32 codes with
    their labels, nullable integers and text with a ``<name>__missing`` mask,
    units (UDUNITS strings, :func:`braggflow.io.nexus.column_units`) as ``units`` attributes.

    Parameters
    ----------
    group : h5py.Group
        Empty group of a file open for writing.
    table : pandas.DataFrame
        Any columns; names are written as text.
    """
    group.attrs["columns"] = json.dumps([str(c) for c in table.columns])
    group.attrs["nrows"] = len(table)
    for name in table.columns:
        key = str(name)
        ds = _write_column(group, key, table[name])
        unit = column_units(key)
        if unit:
            ds.attrs["units"] = unit


def _write_column(group, key: str, s: pd.Series):
    """One column as the dataset ``key`` of ``group`` (with a ``<key>__missing`` mask where needed); returns it."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy().astype(np.int32)
        ds = group.create_dataset(key, data=codes, compression="gzip", compression_opts=1)
        ds.attrs["labels"] = json.dumps([str(c) for c in s.cat.categories])
        ds.attrs["kind"] = "category"
        return ds
    if isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and s.dtype.kind in "iu":
        missing = s.isna().to_numpy()
        values = s.fillna(0).to_numpy().astype(s.dtype.numpy_dtype)
        ds = group.create_dataset(key, data=values, compression="gzip", compression_opts=1)
        ds.attrs["kind"] = f"nullable:{s.dtype.name}"
        group.create_dataset(f"{key}__missing", data=missing)
        return ds
    if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
        return _write_text(group, key, s)
    return group.create_dataset(key, data=s.to_numpy(), compression="gzip", compression_opts=1)


def _write_text(group, key: str, s: pd.Series):
    """A text column: strings, with a ``<key>__missing`` mask when values are missing (None, NaN, pd.NA)."""
    import h5py

    missing = s.isna().to_numpy()
    text = np.array(["" if m else str(v) for v, m in zip(s, missing)], dtype=object)
    ds = group.create_dataset(key, data=text, dtype=h5py.string_dtype())
    ds.attrs["kind"] = "string"
    if missing.any():  # missing values (None, NaN, pd.NA) come back as missing, not as text
        group.create_dataset(f"{key}__missing", data=missing)
    return ds


def _read_table(group) -> pd.DataFrame:
    if "columns" in group.attrs:
        columns = json.loads(group.attrs["columns"])
    else:
        columns = [k for k in group if not k.endswith("__missing")]
    return pd.DataFrame({name: _read_column(group, name) for name in columns})


def _read_column(group, name: str):
    """The values of one column written by :func:`_write_column`, missing ones restored."""
    ds = group[name]
    kind = ds.attrs.get("kind", "")
    if kind == "category":
        labels = json.loads(ds.attrs["labels"])
        return pd.Categorical.from_codes(ds[()].astype(int), categories=labels)
    if kind.startswith("nullable:"):
        values = pd.array(ds[()], dtype=kind.split(":", 1)[1])
        values[group[f"{name}__missing"][()]] = pd.NA
        return values
    if kind == "string":
        values = [x.decode() if isinstance(x, bytes) else x for x in ds[()]]
        if f"{name}__missing" in group:
            values = [None if m else v for v, m in zip(values, group[f"{name}__missing"][()])]
        return values
    return ds[()]


def _table_to_npz_dict(table: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for name in table.columns:
        s = table[name]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            out[f"s:{name}"] = np.array([("" if pd.isna(v) else str(v)) for v in s], dtype=str)
            out[f"n:{name}"] = s.isna().to_numpy()
        elif isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
            out[f"x:{name}"] = s.fillna(0).to_numpy().astype(np.int64)
            out[f"n:{name}"] = s.isna().to_numpy()
        else:
            out[f"v:{name}"] = s.to_numpy()
    return out


def _table_from_npz(npz) -> pd.DataFrame:
    """The peak table of a journal batch (:func:`_table_to_npz_dict`'s layout), conformed to the schema."""
    return conform(_npz_columns(npz, plain=False))


def _npz_columns(npz, *, plain: bool = True) -> pd.DataFrame:
    """A table journaled as ``.npz`` arrays, not conformed to any schema.

    Reads the layout of :func:`_table_to_npz_dict` (``v:``, ``s:``, ``x:``
    arrays with ``n:`` masks of missing values); with ``plain``, arrays named
    by their column alone are columns too (otherwise they are bookkeeping,
    such as ``frames_done``, and left out).
    """
    data = {}
    for key in npz.files:
        kind, _, name = key.partition(":")
        if not name:
            if plain:
                data[key] = npz[key]
        elif kind == "s":
            values = npz[key].astype(object)
            values[npz[f"n:{name}"]] = None
            data[name] = values
        elif kind == "x":
            values = pd.array(npz[key], dtype="Int64")
            values[npz[f"n:{name}"]] = pd.NA
            data[name] = values
        elif kind == "v":
            data[name] = npz[key]
    return pd.DataFrame(data)


def _read_group_obj(group) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    import h5py

    tables = {k: _read_table(v) for k, v in group.items() if isinstance(v, h5py.Group)}
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items() if k != "NX_class"}
    return tables, attrs


def _restore_group(parent, name: str, payload) -> None:
    """The group ``name`` of tables with attributes (an ``NXcollection`` of ``NXcollection`` tables)."""
    tables, attrs = payload
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXcollection"
    for k, v in attrs.items():
        if k != "NX_class":
            g.attrs[k] = v
    for k, t in tables.items():
        table = g.create_group(k)
        table.attrs["NX_class"] = "NXcollection"
        write_table(table, t)
