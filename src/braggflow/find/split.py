"""Splitting components with several maxima: steepest-ascent basins merged by the elder rule.

Every pixel of a component belongs to the basin of the local maximum that a
steepest ascent from it reaches (each pixel steps to its highest 8-neighbour
above threshold until none is higher).  Adjacent basins meet at saddles; the
basins are merged in order of descending saddle (Kruskal), and at each merge
the maximum of the lower of the two regions (the younger) stays a separate
peak only when the dip from it to the saddle is significant (:func:`dip_rule`).
This is 0-dimensional persistent homology of the upper level sets restricted to
one component: the merge order and the saddles are those of a union-find over
the pixels in descending order, found here on the much smaller graph of
basins.  The work is vectorised over all components at once; only the merges
(a few per component) run in a Python loop.

References
----------
H. Edelsbrunner, D. Letscher, A. Zomorodian, "Topological persistence and
simplification", Discrete Comput. Geom. 28, 511 (2002).
"""

from __future__ import annotations

import numpy as np

from braggflow.find._kernels import ascent_roots, basin_contacts, list_neighbours
from braggflow.find.options import FindConfig

__all__ = ["split_components", "split_pixel_components", "dip_rule", "steepest_ascent_basins"]



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

    The markers of a component are its maxima (``is_max``) less those closer
    than ``config.min_separation`` to a higher marker.  Basins of steepest
    ascent (:func:`steepest_ascent_basins`) are merged in order of descending
    saddle; a basin whose maximum is no marker (a maximum dropped for its
    separation, or one with a higher neighbour below threshold) joins its
    neighbour without a test, and a marker that meets a higher one survives
    when :func:`dip_rule` says its dip is significant.  The tile level and noise
    of the test are those under the component's highest marker.

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
        Component id (1..ncomp) of each pixel (8-connected components).
    ncomp : int
        Number of components.
    is_max : (M,) ndarray of bool
        Local maxima among the pixels (ties broken towards the smaller flat index).
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
        Persistence (counts) of each region split off a component, by region id.
    """
    final = comp_of.astype(np.int64)  # final region id per above-threshold pixel; start: component id
    n_max = np.bincount(comp_of[is_max], minlength=ncomp + 1)
    multi = n_max > 1
    if not multi.any():
        return final, ncomp + 1, {}
    members = np.flatnonzero(multi[comp_of])  # list positions of the pixels of multi-maximum components
    sub_flat, sub_val, sub_comp = flat_index[members], values[members], comp_of[members]
    neighbours = list_neighbours(np.ascontiguousarray(sub_flat, dtype=np.int64), int(width))
    root = _ascent_roots(neighbours, sub_flat, sub_val, sub_comp)
    roots, basin = np.unique(root, return_inverse=True)  # basin index of each member pixel, roots ascending
    nb = roots.size
    peak = sub_val[roots]
    marker = is_max[members[roots]]
    marker &= _separated(width, sub_flat[roots], peak, sub_comp[roots], marker, config.min_separation)
    basin_comp = sub_comp[roots]
    # the component's highest marker gives the level and noise of its dip test
    elder_value = np.where(marker, peak, -np.inf)
    order = np.lexsort((sub_flat[roots], -elder_value, basin_comp))
    first = order[np.r_[True, basin_comp[order][1:] != basin_comp[order][:-1]]]
    top_of_comp = np.full(ncomp + 1, -1, dtype=np.int64)
    top_of_comp[basin_comp[first]] = first
    top = top_of_comp[basin_comp]
    level = tile_level[members[roots[top]]]
    noise = tile_noise[members[roots[top]]]
    lo, hi, saddle = _basin_saddles(neighbours, sub_val, sub_comp, basin)
    owner, persistence = _elder_rule(nb, lo, hi, saddle, elder_value, level, noise, config, gain)
    # region ids: the component's highest marker keeps the component id, the other survivors get new ones in
    # order of component, then descending peak
    survivor = np.flatnonzero((owner == np.arange(nb)) & marker)
    is_top = survivor == top[survivor]
    others = survivor[~is_top]
    others = others[np.lexsort((sub_flat[roots[others]], -peak[others], basin_comp[others]))]
    region = np.zeros(nb, dtype=np.int64)
    region[survivor[is_top]] = basin_comp[survivor[is_top]]
    region[others] = ncomp + 1 + np.arange(others.size)
    final[members] = region[owner[basin]]
    persistence_of = {int(region[s]): float(persistence[s]) for s in others}
    return final, ncomp + 1 + others.size, persistence_of


def steepest_ascent_basins(width: int, flat_index: np.ndarray, values: np.ndarray, comp_of: np.ndarray) -> np.ndarray:
    """The local maximum that a steepest ascent reaches from each pixel of a sparse pixel list.

    Each pixel steps to its highest 8-neighbour in the list and in its
    component, when that is higher than itself; pixels are ordered by value,
    and equal values by the smaller flat index (the tie rule of the finder's
    local maxima), so every ascent ends at one maximum.  One compiled pass
    over the pixels in descending order gives each the root of the pixel it
    steps to (:func:`~braggflow.find._kernels.ascent_roots`).

    Parameters
    ----------
    width : int
        Row length of the flat indices, px.
    flat_index : (M,) ndarray of int
        Pixels (flat indices, ascending).
    values : (M,) ndarray of float
        Their values.
    comp_of : (M,) ndarray of int
        Component of each pixel; an ascent stays in its component.

    Returns
    -------
    root : (M,) ndarray of int
        List position of the maximum each pixel ascends to (its own position for a maximum).
    """
    flat_index = np.ascontiguousarray(flat_index, dtype=np.int64)
    return _ascent_roots(list_neighbours(flat_index, int(width)), flat_index, values, comp_of)


def _ascent_roots(neighbours: np.ndarray, flat_index: np.ndarray, values: np.ndarray,
                  comp_of: np.ndarray) -> np.ndarray:
    """:func:`steepest_ascent_basins` from the pixels' neighbour table (``_kernels.list_neighbours``)."""
    m = flat_index.size
    rank = np.empty(m, dtype=np.int64)
    rank[np.lexsort((-flat_index, values))] = np.arange(m)  # higher rank: higher in the ascent order
    return ascent_roots(neighbours, rank, np.ascontiguousarray(comp_of, dtype=np.int64))


def _separated(width: int, flat: np.ndarray, peak: np.ndarray, comp: np.ndarray, marker: np.ndarray,
               min_separation: float) -> np.ndarray:
    """Markers kept after dropping those closer than ``min_separation`` to a higher kept marker of their component."""
    keep = marker.copy()
    idx = np.flatnonzero(marker)
    if idx.size < 2 or min_separation <= 2.0:  # two maxima are never 8-neighbours: at least 2 px apart
        return keep
    from scipy.spatial import cKDTree

    rows, cols = np.divmod(flat[idx], width)
    pairs = cKDTree(np.column_stack([rows, cols])).query_pairs(min_separation, output_type="ndarray")
    if not pairs.size:
        return keep
    a, b = idx[pairs[:, 0]], idx[pairs[:, 1]]
    d2 = (rows[pairs[:, 0]] - rows[pairs[:, 1]]) ** 2 + (cols[pairs[:, 0]] - cols[pairs[:, 1]]) ** 2
    close = (comp[a] == comp[b]) & (d2 < min_separation**2)
    a, b = a[close], b[close]
    if not a.size:
        return keep
    neighbours: dict[int, list[int]] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    involved = np.array(sorted(neighbours))
    for i in involved[np.lexsort((flat[involved], -peak[involved]))].tolist():  # descending peak
        if keep[i] and any(keep[j] and (peak[j], -flat[j]) > (peak[i], -flat[i]) for j in neighbours[i]):
            keep[i] = False
    return keep


def _basin_saddles(neighbours: np.ndarray, values: np.ndarray, comp: np.ndarray,
                   basin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The highest saddle of each pair of adjacent basins: (lower basin index, higher index, saddle value)."""
    as_int = np.ascontiguousarray
    lo, hi, sad = basin_contacts(neighbours, as_int(values, dtype=np.float64), as_int(comp, dtype=np.int64),
                                 as_int(basin, dtype=np.int64))
    key = lo * (int(basin.max()) + 1) + hi
    order = np.lexsort((-sad, key))  # rows equal in key and saddle are equal: their order is no matter
    key, sad, lo, hi = key[order], sad[order], lo[order], hi[order]
    first = np.r_[True, key[1:] != key[:-1]] if key.size else np.zeros(0, dtype=bool)
    return lo[first], hi[first], sad[first]


def _elder_rule(nb: int, lo: np.ndarray, hi: np.ndarray, saddle: np.ndarray, elder_value: np.ndarray,
                level: np.ndarray, noise: np.ndarray, config: FindConfig, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal merging of basins by descending saddle, the younger region's maximum tested at each merge.

    Returns the surviving basin each basin ends in, and the persistence of each
    survivor's maximum (NaN for merged basins and the components' highest).
    """
    parent = np.arange(nb)
    owner = np.arange(nb)
    persistence = np.full(nb, np.nan)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    value = elder_value.tolist()
    for k in np.argsort(-saddle, kind="stable").tolist():
        ra, rb = find(int(lo[k])), find(int(hi[k]))
        if ra == rb:
            continue
        elder, younger = (ra, rb) if value[ra] >= value[rb] else (rb, ra)
        parent[younger] = elder
        s = float(saddle[k])
        if value[younger] == -np.inf or not _dip_passes(config, value[younger], s, float(level[younger]),
                                                         float(noise[younger]), gain):
            owner[younger] = elder  # merged: its pixels go to the elder's region
        else:
            persistence[younger] = value[younger] - s
    # follow chains of merges to a surviving basin
    while True:
        nxt = owner[owner]
        if np.array_equal(nxt, owner):
            return owner, persistence
        owner = nxt


def _dip_passes(config: FindConfig, peak: float, saddle: float, level: float, noise: float, gain: float) -> bool:
    """:func:`dip_rule` for one maximum and saddle."""
    if config.method == "persistence":
        h_min = config.min_persistence if config.min_persistence is not None else config.threshold_sigma * noise
        return peak - saddle >= h_min
    # dip significant against the Poisson noise of the counts at the saddle
    return peak - saddle >= config.split_sigma * np.sqrt(noise**2 + gain * max(saddle - level, 0.0))


def dip_rule(config: FindConfig, level: float, noise: float, gain: float):
    """The test a maximum must pass to stay separate from a higher one it meets at a saddle.

    ``components``: the dip ``peak - saddle`` exceeds ``config.split_sigma``
    standard deviations of the counts at the saddle (tile noise and Poisson
    above the tile ``level``).  ``persistence``: the dip is at least
    ``config.min_persistence`` (default: ``threshold_sigma x noise``).

    Parameters
    ----------
    config : FindConfig
    level, noise : float
        Tile background level and noise of one pixel, counts.
    gain : float
        ADU per photon.

    Returns
    -------
    keep : callable(peak_value, saddle_value) -> bool
        Monotone in the saddle value.
    """

    def keep(peak, saddle):
        return _dip_passes(config, float(peak), float(saddle), level, noise, gain)

    return keep
