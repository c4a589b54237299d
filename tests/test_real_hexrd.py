"""Real data: HEXRD's measured spots of three Zr grains (APS 1-ID-C, GE 41RT) found by `braggflow run`."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from braggflow.io.frames import open_frames
from braggflow.io.hexrd import read_spots_file, spots_to_pixels


def hexrd_comparison(shared_data, table):
    """Distances from each of HEXRD's measured spots to the nearest peak in its own frame, px."""
    folder = shared_data / "hexrd_zr_ge2"
    series = open_frames(str(folder / "LT1_Ne_zr001_00000-fc_GE2.npz"))
    spots = pd.concat([spots_to_pixels(read_spots_file(folder / f"spots_0000{i}.out"), pixel_size_mm=0.2,
                                       shape=series.shape) for i in range(3)], ignore_index=True)
    spots = spots.dropna(subset=["meas_x", "meas_y", "meas_ome"])
    om = series.omega
    spots["frame"] = [int(np.flatnonzero((om[:, 0] <= o) & (o < om[:, 1]))[0]) for o in spots["meas_ome_deg"]]
    dist = np.full(len(spots), np.inf)
    for f, idx in spots.groupby("frame").groups.items():
        peaks = table[table["frame"] == f]
        if len(peaks):
            dist[spots.index.get_indexer(idx)] = cKDTree(peaks[["row", "col"]].to_numpy()).query(
                spots.loc[idx, ["meas_row", "meas_col"]].to_numpy())[0]
    return spots, dist


@pytest.mark.realdata
def test_hexrd_measured_spots_found_by_default_run(shared_data, tmp_path):
    from braggflow.cli import main

    src = shared_data / "hexrd_zr_ge2" / "LT1_Ne_zr001_00000-fc_GE2.npz"
    out = tmp_path / "zr.h5"
    try:
        main(["run", str(src), "-o", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    from braggflow.io.results import read_peaks

    table = read_peaks(out)
    spots, dist = hexrd_comparison(shared_data, table)
    assert len(spots) == 1373
    within = dist < 2.0
    print(f"HEXRD spots within 2 px: {within.mean():.3f}; median distance of those {np.median(dist[within]):.3f} px; "
          f"median over all {np.median(dist):.3f} px")
    # Measured here: 0.924 within 2 px, median 0.138 px (README). Most of the rest are streaks from the
    # deformed grains, split differently across frames than HEXRD's 3D spot centroids.
    assert within.mean() >= 0.90
    assert np.median(dist[within]) <= 0.3
