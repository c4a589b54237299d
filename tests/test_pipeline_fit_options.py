"""The profile-fitting options reach the per-frame pipeline: ``integrate.method`` and ``locate.deblend``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braggflow.pipeline import process_frame
from braggflow.pipeline.config import Config, apply_overrides
from braggflow.profiles.render import moffat_profile
from braggflow.schema import Flag
from braggflow.simulate.frames import match_peaks


def _moffat_frame(seed: int = 3, shape: int = 240, spacing: int = 40):
    """Moffat (beta 2.5) peaks of known flux on a grid, background 50, Poisson counts."""
    rng = np.random.default_rng(seed)
    expected = np.full((shape, shape), 50.0)
    truth = []
    for r in range(spacing, shape - spacing + 1, spacing):
        for c in range(spacing, shape - spacing + 1, spacing):
            r0, c0, sigma = r + rng.uniform(-0.5, 0.5), c + rng.uniform(-0.5, 0.5), rng.uniform(0.9, 1.5)
            flux = float(np.exp(rng.uniform(np.log(5000.0), np.log(50000.0))))
            rows, cols = np.arange(r - 15, r + 16), np.arange(c - 15, c + 16)
            expected[r - 15:r + 16, c - 15:c + 16] += flux * moffat_profile(rows, cols, row=r0, col=c0, sigma_row=sigma,
                                                                         sigma_col=sigma, beta=2.5)
            truth.append((r0, c0, flux))
    table = pd.DataFrame(truth, columns=["row", "col", "intensity"]).assign(frame=0)
    return rng.poisson(expected).astype(np.float32), table


def test_integrate_method_profile_recovers_the_wings_that_the_sum_loses():
    frame, truth = _moffat_frame()
    ratios = {}
    for method in ("sum", "profile"):
        config = apply_overrides(Config(), [f"integrate.method={method}"])
        table = process_frame(frame, config=config)
        m = match_peaks(table, truth)
        assert (m["found_index"] >= 0).all()
        ratios[method] = np.median(table["intensity"].to_numpy()[m.found_index] / truth["intensity"].to_numpy())
    assert ratios["sum"] < 0.95  # the r^-5 wings outside the region are lost
    assert abs(ratios["profile"] - 1) < 0.03


def test_locate_deblend_splits_a_close_pair_in_the_pipeline():
    from braggflow.profiles.render import peak_profile

    rng = np.random.default_rng(1)
    expected = np.full((96, 96), 50.0)
    rr = np.arange(96)
    for row, col, flux in ((40.3, 40.6, 20000.0), (41.9, 43.1, 14000.0)):  # 3 px apart, sigma 1.6: one region
        expected += flux * peak_profile(rr, rr, row=row, col=col, sigma_row=1.6, sigma_col=1.6)
    frame = rng.poisson(expected).astype(np.float32)
    plain = process_frame(frame, config=apply_overrides(Config(), ["locate.deblend=false"]))
    split = process_frame(frame, config=apply_overrides(Config(), ["locate.deblend=true"]))
    assert len(plain) == 1 and not (plain["flags"].to_numpy() & Flag.BLENDED).any()
    assert len(split) == 2 and ((split["flags"].to_numpy() & Flag.BLENDED) != 0).all()
