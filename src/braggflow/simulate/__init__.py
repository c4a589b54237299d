"""Synthetic frames and patches with ground truth.

- :mod:`~braggflow.simulate.frames`: series of detector frames (the demo's mixed
  population, Gaussian spots with close pairs, the pinned benchmark frames),
  NeXus writing, and matching found peaks to the truth.
- :mod:`~braggflow.simulate.artefacts`: zingers, hot pixels and a powder ring added
  to a series, with their truth.
- :mod:`~braggflow.simulate.dense`: dense stills on a Pilatus 6M.
- :mod:`~braggflow.simulate.patches`: single-peak patches for testing and training
  the localizers.
- :mod:`~braggflow.simulate.gixd`: grazing-incidence frames in polar (q, chi) bins
  with labelled rings, arcs and spots, for training and testing the detector.
"""
