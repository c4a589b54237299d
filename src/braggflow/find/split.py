"""Splitting components with several maxima: watershed basins merged by the elder rule.

Two maxima of one component stay separate peaks only when the dip between
them is significant (:func:`dip_rule`); this is 0-dimensional persistent
homology of the upper level sets restricted to one component.

References
----------
H. Edelsbrunner, D. Letscher, A. Zomorodian, "Topological persistence and
simplification", Discrete Comput. Geom. 28, 511 (2002).
"""

from __future__ import annotations

import math

import numpy as np

from braggflow.find.options import FindConfig

__all__ = ["split_components", "split_pixel_components", "dip_rule", "may_split", "merge_basins"]


def split_components(frame: np.ndarray, flat_index: np.ndarray, values: np.ndarray, comp_of: np.ndarray,
                     ncomp: int, is_max: np.ndarray, tile_level: np.ndarray, tile_noise: np.ndarray, *,
                     config: FindConfig, gain: float) -> tuple[np.ndarray, int, dict[int, float]]:
    """Split the components that hold several maxima into one region per significant maximum.

    :func:`split_pixel_components` on the frame's width; the split uses the
    values of the pixels above threshold alone.

    Parameters
    ----------
    frame : (H, W) ndarray of float
        Corrected frame, counts.
    flat_index, values, comp_of, ncomp, is_max, tile_level, tile_noise, config, gain
        As :func:`split_pixel_components`.

    Returns
    -------
    final, nreg, persistence
        As :func:`split_pixel_components`.
    """
    return split_pixel_components(frame.shape[1], flat_index, values, comp_of, ncomp, is_max, tile_level,
                                  tile_noise, config=config, gain=gain)


def split_pixel_components(width: int, flat_index: np.ndarray, values: np.ndarray, comp_of: np.ndarray,
                           ncomp: int, is_max: np.ndarray, tile_level: np.ndarray, tile_noise: np.ndarray, *,
                           config: FindConfig, gain: float) -> tuple[np.ndarray, int, dict[int, float]]:
    """Split the components that hold several maxima into one region per significant maximum, from the pixel list.

    Maxima closer than ``config.min_separation`` to a higher one are dropped
    first; a watershed from the remaining maxima gives basins, and the elder
    rule (:func:`merge_basins`) merges every basin whose dip to a higher
    neighbour fails :func:`dip_rule`.

    Parameters
    ----------
    width : int
        Row length of the flat indices, px (the frame width; a block of
        frames stacked along the rows keeps it).
    flat_index : (M,) ndarray of int
        The pixels above threshold (flat indices ``row x width + col``, ascending).
    values : (M,) ndarray of float
        Their counts.
    comp_of : (M,) ndarray of int
        Component id (1..ncomp) of each pixel.
    ncomp : int
        Number of components.
    is_max : (M,) ndarray of bool
        Local maxima among the pixels.
    tile_level, tile_noise : (M,) ndarray of float
        Tile background and noise under each pixel, counts.
    config : FindConfig
    gain : float
        ADU per photon.

    Returns
    -------
    final : (M,) ndarray of int
        Region id of each pixel (component ids, and new ids from ``ncomp + 1`` for split-off parts).
    nreg : int
        One more than the highest region id.
    persistence : dict of {int: float}
        Persistence (counts) of each region made by a split, by region id.
    """
    n_max = np.bincount(comp_of[is_max], minlength=ncomp + 1)
    final = comp_of.astype(np.int64)  # final region id per above-threshold pixel; start: component id
    next_id = ncomp + 1
    persistence_of: dict[int, float] = {}
    multi = np.flatnonzero(n_max > 1)
    if not multi.size:
        return final, next_id, persistence_of
    order = np.argsort(comp_of, kind="stable")
    sorted_comp = comp_of[order]
    starts = np.searchsorted(sorted_comp, multi, side="left")
    stops = np.searchsorted(sorted_comp, multi, side="right")
    for cid, a, b in zip(multi, starts, stops):
        members = order[a:b]
        split = _split_one(width, flat_index, values, members, is_max, tile_level, tile_noise, config=config,
                           gain=gain)
        if split is None:
            continue
        basin_of_pixel, owner, pers, survivors = split
        new_ids = {int(s): (cid if k == 0 else next_id + k - 1) for k, s in enumerate(survivors)}
        next_id += len(survivors) - 1
        lut = np.zeros(len(owner), dtype=np.int64)
        for lab in range(1, len(owner)):
            lut[lab] = new_ids[int(owner[lab])]
        final[members] = lut[basin_of_pixel]
        for s in survivors:
            persistence_of[new_ids[int(s)]] = float(pers[int(s)])
    return final, next_id, persistence_of


def dip_rule(config: FindConfig, level: float, noise: float, gain: float):
    """The test a maximum must pass to stay separate from a higher one it meets at a saddle.

    ``components``: the dip ``peak - saddle`` exceeds ``config.split_sigma``
    standard deviations of the counts at the saddle (tile noise and Poisson
    above the tile ``level``).  ``persistence``: the dip is at least
    ``config.min_persistence`` (default: ``threshold_sigma x noise``).

    Returns
    -------
    keep : callable(peak_value, saddle_value) -> bool
        Monotone in the saddle value.
    """
    if config.method == "persistence":
        h_min = config.min_persistence if config.min_persistence is not None else config.threshold_sigma * noise

        def keep(peak, saddle):
            return peak - saddle >= h_min
    else:
        k = config.split_sigma

        def keep(peak, saddle):
            # dip significant against the Poisson noise of the counts at the saddle
            return peak - saddle >= k * np.sqrt(noise**2 + gain * max(saddle - level, 0.0))

    return keep


def _split_one(width, flat_index, values, members, is_max, tile_level, tile_noise, *, config, gain):
    """Watershed and elder-rule merging of one component (pixels ``members`` of the list).

    Returns None when the component stays whole, else ``(basin of each member
    pixel, owner, persistence, survivors)`` as :func:`merge_basins` gives them.
    """
    from skimage.segmentation import watershed

    w = width
    rows, cols = np.divmod(flat_index[members], w)
    r0, c0 = rows.min(), cols.min()
    sub_mask = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), dtype=bool)
    sub_mask[rows - r0, cols - c0] = True
    sub = np.full(sub_mask.shape, -np.inf)  # the component's bounding box, its pixels' values, -inf elsewhere
    sub[rows - r0, cols - c0] = values[members]
    mx = members[is_max[members]]
    mx = mx[np.argsort(-values[mx], kind="stable")]
    kept: list[int] = []
    mr, mc = np.divmod(flat_index[mx], w)
    for i in range(len(mx)):
        if all((mr[i] - mr[j]) ** 2 + (mc[i] - mc[j]) ** 2 >= config.min_separation**2 for j in kept):
            kept.append(i)
    if len(kept) < 2:
        return None
    peaks = values[mx[kept]]
    # tile background and noise at the component's highest pixel
    keep = dip_rule(config, float(tile_level[mx[0]]), float(tile_noise[mx[0]]), gain)
    if not may_split(sub, mr[kept] - r0, mc[kept] - c0, peaks, keep):
        return None  # most multi-maximum components: noise on a bright peak's top, no watershed needed
    markers = np.zeros(sub_mask.shape, dtype=np.int32)
    markers[mr[kept] - r0, mc[kept] - c0] = np.arange(1, len(kept) + 1)
    basins = watershed(-np.where(sub_mask, sub, 0.0), markers, mask=sub_mask, connectivity=2)
    owner, pers = merge_basins(np.where(sub_mask, sub, 0.0), basins, peaks, keep)
    survivors = np.unique(owner[1:])
    if len(survivors) < 2:
        return None
    return basins[rows - r0, cols - c0], owner, pers, survivors


def may_split(sub: np.ndarray, rows: np.ndarray, cols: np.ndarray, peaks: np.ndarray, keep) -> bool:
    """Whether any but the highest of a component's maxima can survive the elder rule.

    A maximum dies at the highest saddle joining it to a higher maximum; the
    minimum of ``sub`` along the straight 8-connected line between the two is a
    lower bound of that saddle (``sub`` is -inf outside the component, so a line
    leaving it bounds nothing).  ``keep(peak, saddle)`` is monotone: false at a
    lower bound means false at the saddle itself.  When every maximum fails at
    its bound no split is possible and the watershed can be skipped.

    Parameters
    ----------
    sub : (h, w) ndarray of float
        Component bounding box, -inf outside the component.
    rows, cols : (M,) ndarray of int
        Maxima in ``sub``, in order of descending ``peaks``.
    peaks : (M,) ndarray of float
    keep : callable(peak_value, saddle_value) -> bool
    """
    for i in range(1, len(peaks)):
        bound = -np.inf
        for j in range(i):
            n = max(abs(int(rows[i]) - int(rows[j])), abs(int(cols[i]) - int(cols[j])))
            t = np.arange(n + 1) / n
            rr = np.rint(rows[i] + t * (rows[j] - rows[i])).astype(int)
            cc = np.rint(cols[i] + t * (cols[j] - cols[i])).astype(int)
            bound = max(bound, float(sub[rr, cc].min()))
        if not math.isfinite(bound) or keep(peaks[i], bound):
            return True
    return False


def merge_basins(sub: np.ndarray, basins: np.ndarray, peaks: np.ndarray, keep) -> tuple[np.ndarray, np.ndarray]:
    """Elder-rule merging of watershed basins (persistence within one component).

    Parameters
    ----------
    sub : (h, w) ndarray of float
        Pixel values of the component's bounding box.
    basins : (h, w) ndarray of int
        Watershed labels 1..M (0 outside the component).
    peaks : (M,) ndarray of float
        Peak value of each basin (label m -> peaks[m - 1]).
    keep : callable(peak_value, saddle_value) -> bool
        Whether a maximum that meets a higher one at ``saddle_value`` survives.

    Returns
    -------
    owner : (M + 1,) ndarray of int
        Surviving basin label that each basin belongs to (index by label).
    persistence : (M + 1,) ndarray of float
        Persistence of each surviving basin's maximum (NaN for merged ones;
        ``inf`` for the component's highest maximum).
    """
    m = len(peaks)
    lo_list, hi_list, s_list = [], [], []
    slices = [
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
        ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(1, None))),
        ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1))),
    ]
    for sa, sb in slices:
        la, lb = basins[sa], basins[sb]
        edge = (la > 0) & (lb > 0) & (la != lb)
        if edge.any():
            lo_list.append(np.minimum(la[edge], lb[edge]))
            hi_list.append(np.maximum(la[edge], lb[edge]))
            s_list.append(np.minimum(sub[sa][edge], sub[sb][edge]))
    parent = np.arange(m + 1)
    owner = np.arange(m + 1)
    persistence = np.full(m + 1, np.nan)
    if not lo_list:
        persistence[1:] = np.inf
        return owner, persistence
    lo, hi, sad = np.concatenate(lo_list), np.concatenate(hi_list), np.concatenate(s_list)
    key = lo * (m + 1) + hi
    order = np.lexsort((-sad, key))
    key, sad = key[order], sad[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key, sad = key[first], sad[first]  # highest saddle of each basin pair
    lo, hi = np.divmod(key, m + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    alive = np.ones(m + 1, dtype=bool)
    alive[0] = False
    for idx in np.argsort(-sad, kind="stable"):
        ra, rb = root(int(lo[idx])), root(int(hi[idx]))
        if ra == rb:
            continue
        elder, younger = (ra, rb) if peaks[ra - 1] >= peaks[rb - 1] else (rb, ra)
        parent[younger] = elder
        if not keep(peaks[younger - 1], float(sad[idx])):
            alive[younger] = False
            owner[younger] = elder
        else:
            persistence[younger] = peaks[younger - 1] - float(sad[idx])
    # follow chains of merged basins to a surviving one
    for i in range(1, m + 1):
        j = i
        while not alive[j]:
            j = owner[j]
        owner[i] = j
    for i in range(1, m + 1):
        if alive[i] and np.isnan(persistence[i]):
            persistence[i] = np.inf
    return owner, persistence
