"""The files braggflow writes are valid NeXus with a default plot: nxvalidate, silx, units, SciCat record.

nxvalidate (NeXus base-class validation, NXDL definitions shipped with it,
no network) checks the results of a simulated series, of the Zr frame cache
and of the GIXD frame, the remapped image and the I(q) profile; a file broken
on purpose must fail.  silx's ``get_default`` must find an NXdata in each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import h5py
import numpy as np
import pytest

from braggflow.checksum import file_sha256
from braggflow.io.results import read_frames, read_group, read_peaks, record_group, write_group
from braggflow.pipeline import run
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.schema import COLUMNS, FRAME_COLUMNS

#: The unit strings braggflow writes (UDUNITS names).
UDUNITS = {"angstrom", "1/angstrom", "angstrom^3", "degree", "pixel", "pixel^2", "counts", "s", "mm", "keV"}

GIXD_GEOMETRY = dict(distance_mm=809.0, beam_center_row=1825.5, beam_center_col=545.0, pixel_size_mm=0.2,
                     wavelength_A=0.6888, incidence_angle_deg=0.5)


def nexus_problems(path) -> tuple[int, int, list[str]]:
    """nxvalidate's base-class validation of a file: (warnings, errors, messages)."""
    pytest.importorskip("nxvalidate", reason="nxvalidate (the dev extra) validates NeXus files")
    real = os.get_terminal_size
    os.get_terminal_size = lambda *a: os.terminal_size((400, 50))  # nxvalidate sizes its log to a terminal
    try:
        from nxvalidate.validate import logger, validate_file
    finally:
        os.get_terminal_size = real
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            messages.append(f"{record.levelname}: {record.getMessage()}")

    keep = Keep(level=logging.WARNING)
    handlers, logger.handlers = logger.handlers, [keep]
    logger.setLevel(logging.WARNING)
    logger.total = {"warning": 0, "error": 0}
    try:
        validate_file(str(path))
    finally:
        logger.handlers = handlers
    return logger.total["warning"], logger.total["error"], messages


def default_nxdata(path):
    """silx's default NXdata of a file (None when it finds none), with its signal name and axes names."""
    silx_nxdata = pytest.importorskip("silx.io.nxdata", reason="silx (the dev extra) reads NXdata")
    with h5py.File(path, "r") as h5:
        nxd = silx_nxdata.get_default(h5)
        if nxd is None:
            return None
        return {"signal": nxd.signal.name.rsplit("/", 1)[-1], "axes": list(nxd.axes_dataset_names),
                "shape": nxd.signal.shape, "valid": nxd.is_valid}


def check_discipline(path) -> None:
    """Every group carries NX_class; every table column of a physical quantity has its UDUNITS unit."""
    missing, bad_units = [], []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "NX_class" not in obj.attrs:
            missing.append(name)
        if isinstance(obj, h5py.Dataset) and "units" in obj.attrs and obj.attrs["units"] not in UDUNITS:
            bad_units.append((name, obj.attrs["units"]))

    with h5py.File(path, "r") as h5:
        h5.visititems(visit)
        for group, columns in (("entry/peaks", COLUMNS), ("entry/frames", FRAME_COLUMNS)):
            for col in columns.values():
                if group in h5 and col.unit:
                    assert h5[group][col.name].attrs["units"] == col.unit, (group, col.name)
        assert h5.attrs["default"] == "entry" and h5["entry"].attrs["NX_class"] == "NXentry"
    assert not missing, f"groups without NX_class: {missing}"
    assert not bad_units, f"units that are not UDUNITS names: {bad_units}"


def check_valid(path) -> None:
    warnings, errors, messages = nexus_problems(path)
    assert errors == 0, messages
    check_discipline(path)


@pytest.fixture(scope="module")
def simulated_results(tmp_path_factory):
    """A small simulated series (HDF5 with a detector mask) run to a results file, then linked."""
    from braggflow.link import link
    from braggflow.simulate.frames import simulate_series, write_nexus

    folder = tmp_path_factory.mktemp("sim")
    sim = simulate_series(3, shape=(256, 256), n_peaks=25, seed=3)
    write_nexus(folder / "frames.h5", sim)
    out = folder / "results.h5"
    run(str(folder / "frames.h5"), config=apply_overrides(Config(), {"locate.method": "com"}), output=out)
    linked = link(read_peaks(out), search_range=3.0)
    write_group(out, "link", tables={"tracks": linked[["track_id", "frame", "row", "col"]]},
                attrs={"search_range": 3.0})
    return out


def test_simulated_results_are_valid_nexus_with_a_default_plot(simulated_results):
    check_valid(simulated_results)
    plot = default_nxdata(simulated_results)
    assert plot == {"signal": "n_peaks", "axes": ["frame"], "shape": (3,), "valid": True}
    peaks = read_peaks(simulated_results)
    with h5py.File(simulated_results) as h5:
        entry = h5["entry"]
        assert entry["program_name"][()].decode() == "braggflow" and "version" in entry["program_name"].attrs
        assert entry["start_time"][()].decode() <= entry["end_time"][()].decode()
        assert entry["peaks"].attrs["NX_class"] == "NXdata" and entry["peaks"].attrs["signal"] == "intensity"
        assert list(entry["peaks"].attrs["axes"]) == [b"col"] or list(entry["peaks"].attrs["axes"]) == ["col"]
        assert entry["peak_map/peaks"][()].sum() == np.isfinite(peaks["row"]).sum()  # every located peak in the map
        assert entry["link"].attrs["NX_class"] == "NXcollection"
        assert entry["link/tracks"].attrs["NX_class"] == "NXcollection"
        assert entry["link/tracks/row"].attrs["units"] == "pixel"
        det = entry["instrument/detector"]
        assert det["masked_pixels"][()] > 0  # the simulated detector gap
        assert det["data"].shape == (3, 256, 256)  # external link to the raw frames
        assert json.loads(entry["process/inputs"][()])[0]["sha256"] == file_sha256(simulated_results.parent
                                                                                   / "frames.h5")
    assert read_group(simulated_results, "link")[1] == {"search_range": 3.0}  # NX_class is not an attribute of it
    assert len(read_frames(simulated_results)) == 3


def test_scicat_record_beside_the_results(simulated_results):
    record = json.loads(simulated_results.with_name("results.scicat.json").read_text())
    assert record["datasetName"] == "results" and record["type"] == "derived"
    assert record["owner"] is None and record["ownerGroup"] is None and record["principalInvestigator"] is None
    assert record["creationTime"].endswith("+00:00")
    meta = record["scientificMetadata"]
    assert meta["summary"]["peaks"] == len(read_peaks(simulated_results)) and meta["summary"]["frames"] == 3
    assert meta["summary"]["status"] == "complete"
    assert meta["inputs"][0]["sha256"] == file_sha256(simulated_results.parent / "frames.h5")
    assert meta["config"]["locate"]["method"] == "com" and "braggflow" in meta["software"]
    assert meta["added"]["link"]["tables"] == {"tracks": len(read_peaks(simulated_results))}  # updated by link


def test_a_broken_file_fails_validation(simulated_results, tmp_path):
    good_warnings, good_errors, _ = nexus_problems(simulated_results)
    broken = tmp_path / "broken.h5"
    shutil.copyfile(simulated_results, broken)
    with h5py.File(broken, "a") as h5:
        del h5["entry/frames"].attrs["signal"]  # an NXdata without its signal
        x = h5["entry/peak_map"].attrs["axes"][1]
        x = x.decode() if isinstance(x, bytes) else x
        values = h5[f"entry/peak_map/{x}"][()]
        del h5[f"entry/peak_map/{x}"]
        h5["entry/peak_map"].create_dataset(x, data=values[:-10])  # an axis shorter than its signal
        del h5["entry/start_time"]
        h5["entry"].create_dataset("start_time", data="the day before yesterday")  # not an ISO 8601 date
        h5["entry/instrument/detector"].create_dataset("distance", data="far")  # a length as text
    warnings, errors, messages = nexus_problems(broken)
    assert good_errors == 0 and errors >= 2, messages
    assert warnings >= good_warnings + 2, messages
    text = "\n".join(messages)
    assert '"@signal" is not present' in text and "inconsistent with the signal shape" in text
    assert "not a valid NX_DATE_TIME" in text and "not a valid NX_FLOAT" in text


def test_remap_and_profile_files_are_nxdata(tmp_path):
    from braggflow.geometry import Geometry
    from braggflow.geometry.azimuthal import azimuthal_profile
    from braggflow.geometry.remap import remap
    from braggflow.io.nexus import write_profile_file, write_remap_file

    geometry = Geometry.from_config(dict(distance_mm=100.0, beam_center_row=-20.0, beam_center_col=64.0,
                                         pixel_size_mm=0.1, wavelength_A=1.0, incidence_angle_deg=0.3))
    rr, cc = np.mgrid[:128, :128]
    frame = 10.0 + 100.0 * np.exp(-((np.hypot(rr + 20, cc - 64) - 80) ** 2) / 8.0)  # one ring
    for to, axes in (("q", ["eta", "q"]), ("qxy-qz", ["q_z", "q_xy"])):
        image, a0, a1 = remap(frame, geometry, to=to, npt=(40, 30))
        write_remap_file(tmp_path / f"{to}.h5", image, a0, a1, to=to, sources=["frame.tif"])
        check_valid(tmp_path / f"{to}.h5")
        plot = default_nxdata(tmp_path / f"{to}.h5")
        assert plot["signal"] == "intensity" and plot["axes"] == axes and plot["shape"] == (30, 40)
        with h5py.File(tmp_path / f"{to}.h5") as h5:
            axes_attr = h5["entry/remap"].attrs["axes"]
            assert not isinstance(axes_attr, str) and [a.decode() if isinstance(a, bytes) else a
                                                       for a in axes_attr] == axes
            assert h5[f"entry/remap/{axes[1]}"].attrs["units"] == "1/angstrom"
    profile = azimuthal_profile(frame, geometry, npt=60, unit="q")
    write_profile_file(tmp_path / "iq.h5", profile)
    check_valid(tmp_path / "iq.h5")
    assert default_nxdata(tmp_path / "iq.h5")["axes"] == ["q"]
    with h5py.File(tmp_path / "iq.h5") as h5:
        np.testing.assert_allclose(h5["entry/profile/intensity_errors"][()], profile["intensity_err"])
        assert h5["entry/profile/q"].attrs["units"] == "1/angstrom"


@pytest.mark.realdata
def test_zr_frame_cache_results_are_valid(shared_data, tmp_path):
    source = shared_data / "hexrd_zr_ge2" / "LT1_Ne_zr001_00000-fc_GE2.npz"
    out = tmp_path / "zr.h5"
    run(str(source), output=out, frames_range=range(2))
    check_valid(out)
    plot = default_nxdata(out)
    assert plot["signal"] == "n_peaks" and plot["axes"] == ["omega"]  # a rotation series: peaks against omega
    with h5py.File(out) as h5:
        assert "data" not in h5["entry/instrument/detector"]  # no HDF5 frames to link to


@pytest.mark.realdata
def test_gixd_results_are_valid_with_the_sample_and_a_q_map(shared_data, tmp_path):
    source = shared_data / "gixd_mapbbr3" / "S123_MABr_A2_00865-00000.tif"
    out = tmp_path / "gixd.h5"
    config = apply_overrides(Config(), {f"geometry.{k}": v for k, v in GIXD_GEOMETRY.items()})
    run(str(source), config=config, output=out)
    record_group(out, "phases", tables={"frame_0": _cell_table()}, attrs={"mode": "rings"})
    check_valid(out)
    with h5py.File(out) as h5:
        assert h5["entry/sample/incident_angle"][()] == 0.5
        assert h5["entry/sample/incident_angle"].attrs["units"] == "degree"
        assert h5["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(0.6888)
        assert h5["entry/instrument/detector/distance"][()] == pytest.approx(809.0)
        assert h5["entry/process/geometry_source"][()].decode() == "config"
        assert list(h5["entry/peak_map"].attrs["axes"]) in (["q_z", "q_xy"], [b"q_z", b"q_xy"])
        assert h5["entry/peak_map/q_xy"].attrs["units"] == "1/angstrom"
        for name in ("phases", "phases_1", "phases/frame_0"):
            assert h5[f"entry/{name}"].attrs["NX_class"] == "NXcollection"
        assert h5["entry/phases/frame_0/a"].attrs["units"] == "angstrom"
        assert h5["entry/phases/frame_0/alpha"].attrs["units"] == "degree"
    assert default_nxdata(out)["signal"] == "n_peaks"


def _cell_table():
    import pandas as pd

    return pd.DataFrame({"phase": ["MAPbBr3"], "a": [5.91], "a_err": [0.007], "alpha": [90.0], "score": [0.4]})
