"""Photon-counting frames at low flux: mostly zeros, but not frames thresholded upstream."""

from __future__ import annotations

import numpy as np
import pytest

from braggflow.find import find_peaks
from braggflow.find.background import is_sparse
from braggflow.profiles.render import peak_profile


@pytest.mark.parametrize("photons", [0.1, 0.5])
def test_low_flux_photon_counts_are_not_taken_for_a_thresholded_frame(photons):
    frame = np.random.default_rng(2).poisson(photons, (2048, 2048)).astype(np.float32)
    assert (frame == 0).mean() > 0.5
    assert not is_sparse(frame)
    assert len(find_peaks(frame).table) <= 1  # pure Poisson noise: no peak (a storage threshold would give thousands)


def test_a_thresholded_frame_is_still_recognised():
    rng = np.random.default_rng(3)
    frame = rng.normal(0.0, 2.0, (512, 512))
    frame[frame < 6] = 0  # stored at or above 6 counts, as a frame cache
    assert is_sparse(np.round(frame))
    photons = rng.poisson(0.5, (512, 512)).astype(float) * 10.0  # gain 10 ADU a photon, mostly zeros
    assert is_sparse(photons) and not is_sparse(photons, gain=10.0)


def test_spots_on_a_low_flux_background_are_found():
    rng = np.random.default_rng(1)
    expected = np.full((512, 512), 0.5)
    axis = np.arange(512)
    truth = []
    for r in range(32, 512, 64):
        for c in range(32, 512, 64):
            y, x = r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5)
            truth.append((y, x))
            expected += 100.0 * peak_profile(axis, axis, row=y, col=x, sigma_row=1.0, sigma_col=1.0)
    table = find_peaks(rng.poisson(expected).astype(np.float32)).table
    truth = np.array(truth)
    d = np.hypot(table["row"].to_numpy()[:, None] - truth[:, 0], table["col"].to_numpy()[:, None] - truth[:, 1])
    assert (d.min(axis=0) < 1.5).all()  # every 100-photon spot found
    assert (d.min(axis=1) >= 1.5).sum() == 0  # and nothing else
