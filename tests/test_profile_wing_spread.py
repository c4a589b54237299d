"""The spread of the strong peaks' wing fraction (:func:`braggflow.integrate.profile._spread`) is half the 16-84 %
range of ``np.percentile``, to the last bit."""

import numpy as np

from braggflow.integrate.profile import _spread


def _numpy_spread(values):
    return float(np.diff(np.percentile(values, [16, 84]))[0] / 2) if values.size > 1 else 0.0


def test_spread_is_half_numpys_16_84_range():
    """Sizes 0-120, normal values, mostly-zero wing fractions (ties), and values holding NaN."""
    rng = np.random.default_rng(5)
    for trial in range(3000):
        n = int(rng.integers(0, 120))
        kind = trial % 3
        values = (rng.normal(size=n) if kind == 0 else np.where(rng.random(n) < 0.6, 0.0, rng.random(n)) if kind == 1
                  else rng.integers(0, 4, n) * 0.1)
        if trial % 50 == 7 and n:
            values[rng.integers(n)] = np.nan
        ours, numpys = _spread(values), _numpy_spread(values)
        assert (ours == numpys and np.signbit(ours) == np.signbit(numpys)) or (np.isnan(ours) and np.isnan(numpys))
    assert _spread(np.array([0.3])) == 0.0
    assert np.isclose(_spread(np.array([0.0, 1.0])), 0.34)  # (0.84 - 0.16) / 2
