"""Geometry from the input's own metadata: Eiger/NeXus master files and miniCBF headers.

A synthetic frame with one Gaussian peak at a known pixel is written with
known geometry metadata; the peak's two_theta and q are checked against the
closed form (flat detector normal to the beam, no tilt), and a PONI-free run
records where its geometry came from.
"""

import math

import h5py
import numpy as np
import pytest

from braggflow.errors import InputFileError
from braggflow.io.metadata import geometry_from_cbf_header, geometry_from_hdf5, length_in_mm, read_geometry_metadata
from braggflow.io.results import read_process
from braggflow.pipeline import run
from braggflow.pipeline.config import Config, apply_overrides, with_input_geometry

SHAPE = (192, 224)
PEAK = (150.0, 180.0)  # row, col
CENTRE = (60.0, 40.0)  # row, col of the direct beam (pixel centres on integers)
PIXEL_MM = 0.075
DISTANCE_MM = 120.0
WAVELENGTH_A = 0.8


def _frames(n=2, seed=0):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: SHAPE[0], : SHAPE[1]]
    peak = 4000.0 * np.exp(-((rr - PEAK[0]) ** 2 + (cc - PEAK[1]) ** 2) / (2 * 1.5**2))
    return np.stack([rng.poisson(20.0 + peak).astype(np.uint32) for _ in range(n)])


def _closed_form(row, col, *, distance_mm=DISTANCE_MM):
    r_mm = math.hypot(row - CENTRE[0], col - CENTRE[1]) * PIXEL_MM
    two_theta = math.atan2(r_mm, distance_mm)
    return math.degrees(two_theta), 4 * math.pi * math.sin(two_theta / 2) / WAVELENGTH_A


def _eiger_master(path, *, with_classes=True):
    """An Eiger-style master file: frames in /entry/data/data_000001, geometry in SI units, beam centre in pixels
    from the detector's corner."""
    with h5py.File(path, "w") as h5:
        entry = h5.create_group("entry")
        data = entry.create_group("data")
        data.create_dataset("data_000001", data=_frames())
        det = entry.create_group("instrument/detector")
        beam = entry.create_group("instrument/beam")
        if with_classes:
            entry.attrs["NX_class"] = "NXentry"
            det.attrs["NX_class"] = "NXdetector"
            beam.attrs["NX_class"] = "NXbeam"
        for name, value, units in (("detector_distance", DISTANCE_MM / 1000, "m"),
                                   ("x_pixel_size", PIXEL_MM / 1000, "m"), ("y_pixel_size", PIXEL_MM / 1000, "m"),
                                   ("beam_center_x", CENTRE[1] + 0.5, "pixel"),
                                   ("beam_center_y", CENTRE[0] + 0.5, "pixel")):
            det.create_dataset(name, data=value).attrs["units"] = units
        beam.create_dataset("incident_wavelength", data=WAVELENGTH_A).attrs["units"] = "angstrom"
    return path


def test_eiger_master_geometry_values(tmp_path):
    meta = geometry_from_hdf5(_eiger_master(tmp_path / "scan_master.h5", with_classes=False))
    assert meta.complete and "NXbeam /entry/instrument/beam/incident_wavelength" in meta.source
    assert meta.values == pytest.approx({"distance_mm": DISTANCE_MM, "pixel_size_mm": PIXEL_MM,
                                         "beam_center_row": CENTRE[0], "beam_center_col": CENTRE[1],
                                         "wavelength_A": WAVELENGTH_A})


def test_run_takes_the_geometry_of_an_eiger_master_file(tmp_path):
    master = _eiger_master(tmp_path / "scan_master.h5")
    out = tmp_path / "results.h5"
    table = run(str(master), output=out)
    assert len(table) == 2
    peak = table.iloc[0]
    assert peak["row"] == pytest.approx(PEAK[0], abs=0.05) and peak["col"] == pytest.approx(PEAK[1], abs=0.05)
    two_theta, q = _closed_form(peak["row"], peak["col"])
    assert peak["two_theta"] == pytest.approx(two_theta, rel=1e-6)
    assert peak["q"] == pytest.approx(q, rel=1e-6) and peak["d"] == pytest.approx(2 * math.pi / q, rel=1e-6)
    process = read_process(out)
    assert process["geometry_source"].startswith("metadata: scan_master.h5 (NXdetector /entry/instrument/detector")
    assert process["geometry"]["poni"]["wavelength"] == pytest.approx(WAVELENGTH_A * 1e-10)
    assert read_process(out)["config"].count("geometry: null") == 1  # the config as given, without the metadata
    with h5py.File(out) as h5:
        det = h5["entry/instrument/detector"]
        assert det["distance"][()] == pytest.approx(DISTANCE_MM) and det["distance"].attrs["units"] == "mm"
        assert det["beam_center_x"][()] == pytest.approx(CENTRE[1] + 0.5)  # NXmx: from the corner
        assert det["beam_center_x"].attrs["units"] == "pixel"
        assert h5["entry/instrument/beam/incident_wavelength"][()] == pytest.approx(WAVELENGTH_A)
        assert h5["entry/instrument/detector/data"].shape == (2, *SHAPE)  # the external link to the raw frames
    back = geometry_from_hdf5(out)  # the results file's own NXdetector and NXbeam read back as the geometry
    assert back.values == pytest.approx({"distance_mm": DISTANCE_MM, "pixel_size_mm": PIXEL_MM,
                                         "beam_center_row": CENTRE[0], "beam_center_col": CENTRE[1],
                                         "wavelength_A": WAVELENGTH_A})


def test_explicit_keys_and_poni_override_the_metadata(tmp_path):
    master = _eiger_master(tmp_path / "scan_master.h5")
    config = apply_overrides(Config(), {"geometry.distance_mm": 2 * DISTANCE_MM})
    merged, source = with_input_geometry(config, [str(master)])
    assert merged.geometry.distance_mm == 2 * DISTANCE_MM and merged.geometry.pixel_size_mm == pytest.approx(PIXEL_MM)
    assert source.startswith("metadata: scan_master.h5") and source.endswith("and config")
    table = run(str(master), config=config, output=tmp_path / "r.h5")
    assert table.iloc[0]["two_theta"] == pytest.approx(
        _closed_form(table.iloc[0]["row"], table.iloc[0]["col"], distance_mm=2 * DISTANCE_MM)[0], rel=1e-6)
    poni = tmp_path / "g.poni"
    poni.write_text("poni_version: 2\nDetector: Detector\nDetector_config: {\"pixel1\": 1e-4, \"pixel2\": 1e-4, "
                    "\"max_shape\": null}\nDistance: 0.3\nPoni1: 0.01\nPoni2: 0.01\nRot1: 0\nRot2: 0\nRot3: 0\n"
                    "Wavelength: 1e-10\n")
    merged, source = with_input_geometry(apply_overrides(Config(), {"geometry.poni": str(poni)}), [str(master)])
    assert source == f"poni: {poni}" and merged.geometry.distance_mm is None


def test_minicbf_header_geometry(tmp_path):
    from fabio.cbfimage import CbfImage

    header = ("# Detector: PILATUS 1M\r\n# Pixel_size 172e-6 m x 172e-6 m\r\n# Exposure_time 0.1 s\r\n"
              "# Wavelength 0.97625 A\r\n# Detector_distance 0.20000 m\r\n# Beam_xy (100.50, 120.50) pixels\r\n")
    path = tmp_path / "frame_00001.cbf"
    CbfImage(data=_frames(1)[0].astype(np.int32), header={"_array_data.header_contents": header}).write(str(path))
    meta = read_geometry_metadata([str(path)])
    assert meta.source == "metadata: frame_00001.cbf (miniCBF header)" and meta.complete
    assert meta.values == pytest.approx({"pixel_size_mm": 0.172, "distance_mm": 200.0, "wavelength_A": 0.97625,
                                         "beam_center_col": 100.0, "beam_center_row": 120.0})
    table = run(str(path), output=tmp_path / "cbf.h5")
    peak = table.iloc[0]
    r_mm = math.hypot(peak["row"] - 120.0, peak["col"] - 100.0) * 0.172
    assert peak["two_theta"] == pytest.approx(math.degrees(math.atan2(r_mm, 200.0)), rel=1e-6)
    assert read_process(tmp_path / "cbf.h5")["geometry_source"] == "metadata: frame_00001.cbf (miniCBF header)"


def test_bad_metadata_is_a_clear_error(tmp_path):
    assert length_in_mm(172, "um") == pytest.approx(0.172) and length_in_mm(0.2, None) == pytest.approx(200.0)
    with pytest.raises(InputFileError, match=r"x\.cbf: .*Pixel_size.*not square"):
        geometry_from_cbf_header("# Pixel_size 172e-6 m x 100e-6 m\n", name="x.cbf")
    path = _eiger_master(tmp_path / "bad.h5")
    with h5py.File(path, "a") as h5:
        h5["entry/instrument/detector/detector_distance"].attrs["units"] = "furlong"
    with pytest.raises(InputFileError, match=r"bad\.h5: cannot read the geometry.*detector_distance.*furlong"):
        read_geometry_metadata([str(path)])
    assert geometry_from_cbf_header("# Exposure_time 0.1 s\n") is None
