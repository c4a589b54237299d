"""A live web dashboard of a results file: the latest frame with its peaks, hit rate, speed, q, phases.

The dashboard is a Bokeh server application (https://bokeh.org, the stack of
the Dask dashboard) that reads a results file -- finished, or still being
written by ``braggflow run`` or ``braggflow watch`` -- every ``interval``
seconds, as any reader may (snapshot and journal, :mod:`braggflow.io.results`),
and updates its plots in the browser.  It never writes to the file.

Panels:

- the latest frame (log-scaled counts) with its peaks circled;
- peaks per frame, and the hit rate (fraction of frames with at least
  ``hit_peaks`` peaks) over a moving window of frames;
- frames/s as the dashboard sees frames arrive, the processing time per
  frame, and the latency (frame complete -> results journaled) when the file
  records it (``/entry/watch`` of a finished watch);
- a histogram of the peaks' q (1/angstrom) when a geometry gave q, else of
  their distance from the frame centre (px);
- the phase of each frame's peaks (the most common ``phase`` among them) when
  ``braggflow identify`` has labelled the peaks.

:func:`serve` starts the server in a background thread, bound to 127.0.0.1
unless another address is asked for.  :class:`ResultsView` holds the plotted
data and can be used without Bokeh (it is what the tests check).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braggflow.schema import HIT_MIN_PEAKS

__all__ = ["ResultsView", "RadialHistogram", "PhaseCounts", "frame_phases", "DashboardServer", "serve", "make_document",
           "DEFAULT_PORT", "HIT_PEAKS", "RADIAL_BINS"]

#: port of ``braggflow dashboard`` and ``watch --dashboard`` unless --port is given
DEFAULT_PORT = 8050
#: a frame with at least this many peaks is a hit (OM's rule: a minimum peak count), as the frames table's default
HIT_PEAKS = HIT_MIN_PEAKS
#: frames in the moving window of the hit rate
HIT_WINDOW = 50


#: bins of the radial histogram
RADIAL_BINS = 60
#: columns of the peak table the dashboard reads
VIEW_COLUMNS = ("frame", "row", "col", "q", "phase")


class RadialHistogram:
    """A histogram of values >= 0 in a fixed number of bins from 0, widened as larger values come.

    The bins are ``[k w, (k + 1) w)`` for ``k < bins``.  The first values set
    ``w`` so that the largest of them falls in the last bin; a later value
    beyond ``bins * w`` doubles ``w`` (adjacent bins merged pairwise, which
    keeps every count exact) until it fits.  Memory is ``bins`` counts, however
    many values are added.

    Parameters
    ----------
    bins : int
        Number of bins (even).
    """

    def __init__(self, bins: int = RADIAL_BINS):
        if bins < 2 or bins % 2:
            raise ValueError(f"bins: an even number >= 2 is needed, got {bins}")
        self.counts = np.zeros(bins, dtype=np.int64)
        self.width = float("nan")

    def add(self, values) -> None:
        """Count ``values`` (non-finite and negative values are left out).

        Parameters
        ----------
        values : (N,) array_like of float
        """
        v = np.asarray(values, dtype=float).reshape(-1)
        v = v[np.isfinite(v) & (v >= 0)]
        if not v.size:
            return
        bins = self.counts.size
        top = float(v.max())
        if not np.isfinite(self.width):
            self.width = top / (bins - 1) if top > 0 else 1.0
        while top >= bins * self.width:
            self.counts = np.concatenate([self.counts[0::2] + self.counts[1::2], np.zeros(bins // 2, np.int64)])
            self.width *= 2
        index = np.minimum((v / self.width).astype(np.int64), bins - 1)
        self.counts += np.bincount(index, minlength=bins)

    @property
    def edges(self) -> np.ndarray:
        """(bins + 1,) bin edges (empty before any value)."""
        if not np.isfinite(self.width):
            return np.zeros(0)
        return np.arange(self.counts.size + 1) * self.width


class PhaseCounts:
    """Peaks per frame and labelled peaks per (frame, phase), counted part by part.

    Memory grows with the frames and phases counted, not with their peaks.
    """

    def __init__(self):
        self.totals: dict[int, int] = {}
        self.labelled: dict[tuple[int, str], int] = {}

    def add(self, peaks: pd.DataFrame) -> None:
        """Count a part of the peak table (``frame``, and ``phase`` when stored)."""
        if not len(peaks):
            return
        frames, n = np.unique(peaks["frame"].to_numpy(np.int64), return_counts=True)
        for f, k in zip(frames.tolist(), n.tolist()):
            self.totals[f] = self.totals.get(f, 0) + k
        if "phase" not in peaks:
            return
        given = peaks["phase"].notna().to_numpy()
        if not given.any():
            return
        names = peaks["phase"][given].astype(str).to_numpy()  # the labelled rows only
        keep = names != ""
        pairs = pd.DataFrame({"frame": peaks["frame"].to_numpy(np.int64)[given][keep],
                              "phase": names[keep]}).value_counts()
        for (f, name), k in pairs.items():
            self.labelled[(int(f), name)] = self.labelled.get((int(f), name), 0) + int(k)

    def table(self) -> pd.DataFrame:
        """``frame``, ``phase``, ``fraction``: each frame's most common phase (ties: the first name) and its share."""
        best: dict[int, tuple[int, str]] = {}
        for (f, name), k in self.labelled.items():
            if f not in best or (-k, name) < (-best[f][0], best[f][1]):
                best[f] = (k, name)
        frames = sorted(best)
        return pd.DataFrame({"frame": np.asarray(frames, dtype=np.int64),
                             "phase": np.asarray([best[f][1] for f in frames], dtype=object),
                             "fraction": np.asarray([best[f][0] / self.totals[f] for f in frames], dtype=float)})


def frame_phases(peaks: pd.DataFrame) -> pd.DataFrame:
    """Per frame, the most common ``phase`` of its labelled peaks and its share of the frame's peaks.

    Parameters
    ----------
    peaks : pandas.DataFrame
        ``frame`` and ``phase`` columns: all the peaks of each frame in it.

    Returns
    -------
    phases : pandas.DataFrame
        ``frame``, ``phase`` (str), ``fraction`` (of all the frame's peaks), one row per frame
        with a labelled peak, by frame (a tie goes to the first phase name); empty when none is labelled.
    """
    counts = PhaseCounts()
    counts.add(peaks)
    return counts.table()


@dataclass
class ResultsView:
    """What the dashboard shows of one results file, refreshed by :meth:`update`.

    It holds the frames table and, of the peaks, only what it draws: the
    latest frame's peaks, a :class:`RadialHistogram` of all peaks, and each
    frame's most common phase.  An update reads the peaks of the frames it has
    not seen yet (:func:`braggflow.io.store.read_peak_parts`, part by part), so
    neither its memory nor the time of an update grows with the peaks already
    in the file.

    Parameters
    ----------
    path : Path
        The results file (it may not exist yet: a run about to start).
    hit_peaks : int
        A frame with at least this many peaks is a hit.

    Attributes
    ----------
    frames : pandas.DataFrame
        The frames table (:data:`braggflow.schema.FRAME_COLUMNS`) as last read.
    latest : pandas.DataFrame
        The peaks (``frame``, ``row``, ``col``, ``q``, ``phase`` where stored) of :meth:`latest_frame`.
    histogram : RadialHistogram
        The peaks' q (1/angstrom) when the file's peaks have q, else their distance from the frame centre (px).
    arrivals : list of (float, int)
        (time.monotonic(), frames in the file) at each update that saw new frames.
    """

    path: Path
    hit_peaks: int = HIT_PEAKS
    frames: pd.DataFrame = field(default_factory=pd.DataFrame)
    latest: pd.DataFrame = field(default_factory=pd.DataFrame)
    histogram: RadialHistogram = field(default_factory=RadialHistogram)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    error: str = ""
    live_latency: Any = None
    _series: dict[str, Any] = field(default_factory=dict)
    _seen: set = field(default_factory=set)
    _radial: str = ""
    _phases: list = field(default_factory=list)

    def update(self) -> bool:
        """Read the frames table again, and the peaks of frames not seen yet; True when there are new frames.

        A file that does not exist yet, or cannot be read at this moment, leaves
        the view as it was (:attr:`error` says why).
        """
        from braggflow.errors import BraggflowError
        from braggflow.io.results import read_frames

        try:
            frames = read_frames(self.path)
            fresh = set(frames["frame"].astype(int).tolist()) - self._seen if len(frames) else set()
            if fresh:
                self._take_peaks(fresh, int(frames["frame"].max()))
        except (BraggflowError, OSError) as exc:
            self.error = str(exc)
            return False
        self.error = ""
        new = len(frames) != len(self.frames)
        self.frames = frames
        if new:
            self.arrivals.append((time.monotonic(), len(frames)))
            del self.arrivals[:-20]
        return new

    def _take_peaks(self, fresh: set, latest: int) -> None:
        """Add the peaks of the frames ``fresh`` to the histogram and the phases; keep those of ``latest``."""
        from braggflow.io.store import read_peak_parts

        latest_parts, counts, covered = [], PhaseCounts(), set()
        for part, held in read_peak_parts(self.path, fresh, columns=VIEW_COLUMNS):
            covered |= held
            if not len(part):
                continue
            self.histogram.add(self._radial_values(part))
            counts.add(part)
            if latest in held:
                latest_parts.append(part[part["frame"].to_numpy() == latest])
        phases = counts.table()
        if len(phases):
            self._phases.append(phases)
            if len(self._phases) > 64:  # one table again, so that the list stays short
                self._phases = [pd.concat(self._phases, ignore_index=True)]
        if latest in covered:
            self.latest = (pd.concat(latest_parts, ignore_index=True) if latest_parts
                           else pd.DataFrame({c: [] for c in ("frame", "row", "col")}))
        self._seen |= covered

    def _radial_values(self, part: pd.DataFrame) -> np.ndarray:
        """The values of ``part`` the histogram counts: q when the file's peaks have it, else the radius."""
        if not self._radial:
            has_q = "q" in part and np.isfinite(part["q"].to_numpy(float)).any()
            self._radial = "q" if has_q else "radius"
        if self._radial == "q":
            return part["q"].to_numpy(float) if "q" in part else np.zeros(0)
        shape = self._frame_shape()
        r0, c0 = ((shape[0] - 1) / 2, (shape[1] - 1) / 2) if shape else (0.0, 0.0)
        return np.hypot(part["row"].to_numpy(float) - r0, part["col"].to_numpy(float) - c0)

    @property
    def n_frames(self) -> int:
        """Frames in the file."""
        return len(self.frames)

    def frames_per_second(self) -> float:
        """Frames/s over the last updates that saw new frames (NaN with fewer than two)."""
        if len(self.arrivals) < 2:
            return float("nan")
        (t0, n0), (t1, n1) = self.arrivals[0], self.arrivals[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")

    def hits(self) -> np.ndarray:
        """(F,) bool: frames with at least ``hit_peaks`` peaks, in frame order."""
        return self.frames["n_peaks"].to_numpy() >= self.hit_peaks if len(self.frames) else np.zeros(0, bool)

    def hit_rate(self, window: int = HIT_WINDOW) -> np.ndarray:
        """(F,) float: fraction of hits over the last ``window`` frames up to each frame."""
        hits = self.hits().astype(float)
        if not hits.size:
            return hits
        csum = np.concatenate([[0.0], np.cumsum(hits)])
        idx = np.arange(1, hits.size + 1)
        lo = np.maximum(0, idx - window)
        return (csum[idx] - csum[lo]) / (idx - lo)

    def latest_frame(self) -> int | None:
        """Index of the frame last written (the highest index), None when there is none."""
        return int(self.frames["frame"].max()) if len(self.frames) else None

    def latest_peaks(self) -> pd.DataFrame:
        """Peaks of :meth:`latest_frame` (``frame``, ``row``, ``col``, and ``q``, ``phase`` where stored)."""
        return self.latest

    def radial(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The histogram of the peaks' q (1/angstrom) when known, else of their distance from the frame centre (px).

        Returns
        -------
        counts : (B,) ndarray of int64
            Peaks per bin (empty before any peak).
        edges : (B + 1,) ndarray of float
            Bin edges, in the unit of ``label``.
        label : str
            What is counted.
        """
        label = "q (1/Å)" if self._radial != "radius" else "distance from the frame centre (px)"
        edges = self.histogram.edges
        return (self.histogram.counts.copy() if edges.size else np.zeros(0, np.int64)), edges, label

    def phases(self) -> pd.DataFrame:
        """Per frame, the most common ``phase`` of its labelled peaks (frame, phase, fraction); empty when none."""
        if not self._phases:
            return frame_phases(pd.DataFrame())
        return pd.concat(self._phases, ignore_index=True).sort_values("frame", kind="stable").reset_index(drop=True)

    def latency(self) -> np.ndarray:
        """Latencies (s, frame complete -> journaled): of a watch in this process, else as the file records them
        (``/entry/watch`` of a finished watch); empty when none."""
        from braggflow.errors import BraggflowError
        from braggflow.io.results import read_group

        if self.live_latency:
            return np.asarray(list(self.live_latency), dtype=float)
        try:
            tables, _ = read_group(self.path, "watch")
        except (BraggflowError, OSError, KeyError):
            return np.zeros(0)
        for table in tables.values():
            if "latency" in table:
                return table["latency"].to_numpy(float)
        return np.zeros(0)

    def _frame_shape(self) -> tuple[int, int] | None:
        from braggflow.errors import BraggflowError
        from braggflow.io.results import read_process

        if "shape" not in self._series:
            try:
                shape = read_process(self.path).get("frame_shape")
            except (BraggflowError, OSError):
                return None
            if isinstance(shape, (str, bytes)):
                import json

                shape = json.loads(shape)
            self._series["shape"] = tuple(int(v) for v in shape) if shape is not None else None
        return self._series["shape"]

    def frame_image(self, frame: int) -> np.ndarray | None:
        """The raw counts of ``frame`` read from the run's input (None when it cannot be read from here)."""
        from braggflow.errors import BraggflowError
        from braggflow.io.frames import open_frames

        row = self.frames[self.frames["frame"] == frame]
        try:
            if "series" not in self._series:
                from braggflow.io.results import read_process

                records = read_process(self.path).get("inputs", [])
                inputs = [i["name"] if isinstance(i, dict) else str(i) for i in records]
                self._series["inputs"] = [p for p in inputs if Path(p).exists()]
                self._series["series"] = {}
            inputs = self._series["inputs"]
            if not inputs:
                return None
            source = str(row["source_file"].iloc[0]) if len(row) and "source_file" in row else ""
            index = int(row["frame_in_file"].iloc[0]) if len(row) and "frame_in_file" in row else int(frame)
            match = [p for p in inputs if source and (p == source or p.endswith("/" + source))] or inputs[:1]
            opened = self._series["series"]
            if match[0] not in opened:
                opened[match[0]] = open_frames(match[0])
            series = opened[match[0]]
            if index < 0 or index >= len(series):
                return None
            return np.asarray(series[index], dtype=np.float32)
        except (BraggflowError, OSError, KeyError, ValueError):
            return None


def make_document(doc, view: ResultsView, *, interval: float = 1.0) -> None:
    """Build the dashboard's Bokeh document for ``view`` and update it every ``interval`` seconds.

    Parameters
    ----------
    doc : bokeh.document.Document
    view : ResultsView
    interval : float
        Seconds between reads of the results file.
    """
    from bokeh.layouts import column, row

    page = _Page(view)
    page.refresh(doc)
    doc.add_root(column(page.header, page.stats, row(page.frame_fig, column(page.trend, page.rate)),
                        row(page.hist, page.phase_fig)))
    doc.add_periodic_callback(lambda: page.refresh(doc), int(interval * 1000))


class _Page:
    """The dashboard's Bokeh models (figures, data sources, text) and how one read of the file updates them."""

    def __init__(self, view: ResultsView):
        from bokeh.models import ColorBar, ColumnDataSource, Div, LogColorMapper, Range1d
        from bokeh.plotting import figure

        self.view = view
        self.image_src = ColumnDataSource({"image": [np.zeros((2, 2), np.float32)], "dw": [2], "dh": [2]})
        self.peak_src = ColumnDataSource({"x": [], "y": []})
        self.trend_src = ColumnDataSource({"frame": [], "n_peaks": [], "hit_rate": []})
        self.hist_src = ColumnDataSource({"left": [], "right": [], "count": []})
        self.phase_src = ColumnDataSource({"frame": [], "fraction": [], "phase": []})
        self.header = Div(text="", name="frames", sizing_mode="stretch_width")
        self.stats = Div(text="", name="stats", sizing_mode="stretch_width")
        self.mapper = LogColorMapper(palette="Viridis256", low=1, high=10)
        self.x_range, self.y_range = Range1d(0, 2), Range1d(2, 0)  # row 0 at the top, as the detector shows it
        self.frame_fig = figure(title="latest frame", width=560, height=520, x_range=self.x_range,
                                y_range=self.y_range, x_axis_label="column (px)", y_axis_label="row (px)")
        self.frame_fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=self.image_src,
                             color_mapper=self.mapper)
        self.frame_fig.scatter(x="x", y="y", source=self.peak_src, size=12, fill_alpha=0, line_color="red",
                               line_width=1.5, legend_label="peaks")
        self.frame_fig.add_layout(ColorBar(color_mapper=self.mapper, title="counts"), "right")
        self.trend = figure(title="peaks per frame", width=620, height=250, x_axis_label="frame", y_axis_label="peaks")
        self.trend.scatter(x="frame", y="n_peaks", source=self.trend_src, size=3)
        self.rate = figure(title=f"hit rate (>= {view.hit_peaks} peaks, last {HIT_WINDOW} frames)", width=620,
                           height=200, x_axis_label="frame", y_axis_label="fraction of hits",
                           x_range=self.trend.x_range, y_range=(0, 1.05))
        self.rate.line(x="frame", y="hit_rate", source=self.trend_src, line_width=2)
        self.hist = figure(title="peaks by radius", width=620, height=250, y_axis_label="peaks")
        self.hist.quad(left="left", right="right", top="count", bottom=0, source=self.hist_src, fill_alpha=0.6)
        self.phase_fig = figure(title="phase per frame (identify)", width=620, height=200, x_axis_label="frame",
                                y_axis_label="fraction of the frame's peaks", x_range=self.trend.x_range,
                                y_range=(0, 1.05))
        self.phase_fig.scatter(x="frame", y="fraction", source=self.phase_src, size=4)

    def refresh(self, doc) -> None:
        """Read the file again and update every panel; a failed read is shown, not raised."""
        try:
            self._draw(doc)
        except Exception as exc:  # noqa: BLE001 - a bad read must not stop the page's updates
            self.stats.text = f"<i>cannot show {self.view.path}: {exc}</i>"

    def _draw(self, doc) -> None:
        view = self.view
        view.update()
        n = view.n_frames
        doc.title = f"braggflow: {n} frames"
        hits = view.hits()
        fps = view.frames_per_second()
        proc = float(np.median(view.frames["time"])) if n and "time" in view.frames else float("nan")
        lat = view.latency()
        self.header.text = (f"<b>{view.path.name}</b>: <span id='frames'>{n}</span> frames, "
                            f"{int(view.frames['n_peaks'].sum()) if n else 0} peaks, {int(hits.sum())} hits")
        speed = f"{fps:.1f} frames/s arriving" if np.isfinite(fps) else "no new frames since the page opened"
        self.stats.text = (f"{speed}; processing {proc * 1e3:.0f} ms/frame (median)"
                           + (f"; latency median {np.median(lat):.2f} s, p95 {np.percentile(lat, 95):.2f} s"
                              if lat.size else "")
                           + (f"<br><i>{view.error}</i>" if view.error else ""))
        if not n:
            return
        frames = view.frames
        self.trend_src.data = {"frame": frames["frame"].to_numpy(), "n_peaks": frames["n_peaks"].to_numpy(),
                               "hit_rate": view.hit_rate()}
        self._draw_frame(view.latest_frame())
        counts, edges, label = view.radial()
        if counts.size:
            self.hist_src.data = {"left": edges[:-1], "right": edges[1:], "count": counts}
            self.hist.xaxis.axis_label = label
        phases = view.phases()
        if len(phases):
            self.phase_src.data = {"frame": phases["frame"].to_numpy(), "fraction": phases["fraction"].to_numpy(float),
                                   "phase": phases["phase"].astype(str).to_numpy()}

    def _draw_frame(self, latest: int) -> None:
        image = self.view.frame_image(latest)
        if image is not None:
            finite = image[np.isfinite(image) & (image > 0)]
            self.mapper.high = float(np.percentile(finite, 99.9)) if finite.size else 10.0
            self.mapper.low = max(1.0, float(np.percentile(finite, 5))) if finite.size else 1.0
            h, w = image.shape
            self.image_src.data = {"image": [image], "dw": [w], "dh": [h]}
            if (self.x_range.end, self.y_range.start) != (w, h):
                self.x_range.update(start=0, end=w)
                self.y_range.update(start=h, end=0)
        peaks = self.view.latest_peaks()
        self.peak_src.data = {"x": peaks["col"].to_numpy(float) + 0.5, "y": peaks["row"].to_numpy(float) + 0.5}
        self.frame_fig.title.text = f"frame {latest}: {len(peaks)} peaks"


class DashboardServer:
    """A Bokeh server of the dashboard, running in a background thread.

    Attributes
    ----------
    url : str
        Where a browser finds it, e.g. ``http://127.0.0.1:8050/``.
    latencies : collections.deque of float
        Latencies (s) of the frames a watch in this process journaled, newest
        last (the last 500); the page shows them while the file does not yet
        record them.
    """

    def __init__(self, server, thread: threading.Thread, url: str, latencies):
        self._server = server
        self._thread = thread
        self.url = url
        self.latencies = latencies

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        loop = self._server.io_loop
        loop.add_callback(self._server.io_loop.stop)
        self._thread.join(timeout=10)


def serve(path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, hit_peaks: int = HIT_PEAKS,
          interval: float = 1.0) -> DashboardServer:
    """Serve the dashboard of results file ``path`` at ``http://HOST:PORT/`` from a background thread.

    Parameters
    ----------
    path : str or Path
        Results file (finished, being written, or not written yet).
    host : str
        Address to bind: 127.0.0.1 (this machine only) unless another is
        asked for; the page then accepts connections from anywhere that
        reaches that address.
    port : int
        TCP port; 0 picks a free one.
    hit_peaks : int
        A frame with at least this many peaks is a hit.
    interval : float
        Seconds between reads of the file.

    Returns
    -------
    server : DashboardServer

    Raises
    ------
    ConfigError
        If Bokeh is not installed (``pip install 'braggflow[dashboard]'``) or the port is taken.
    """
    from braggflow.errors import ConfigError

    try:
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
    except ImportError:
        raise ConfigError("the dashboard needs Bokeh: pip install 'braggflow[dashboard]'") from None
    from tornado.ioloop import IOLoop

    path = Path(path)
    if port == 0:  # a free port, known before the server starts (its allowed websocket origins name it)
        import socket

        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    started: dict[str, Any] = {}
    ready = threading.Event()

    latencies: deque = deque(maxlen=500)

    def handler(doc) -> None:
        make_document(doc, ResultsView(path, hit_peaks=hit_peaks, live_latency=latencies), interval=interval)

    def main() -> None:
        import asyncio

        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        try:
            origins = ["*"] if host not in ("127.0.0.1", "localhost") else [f"127.0.0.1:{port}", f"localhost:{port}"]
            server = Server({"/": Application(FunctionHandler(handler))}, io_loop=loop, address=host, port=port,
                            allow_websocket_origin=origins)
            server.start()
        except OSError as exc:
            started["error"] = exc
            ready.set()
            return
        started["server"] = server
        ready.set()
        loop.start()
        server.stop()

    thread = threading.Thread(target=main, name="braggflow-dashboard", daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in started:
        raise ConfigError(f"dashboard: cannot listen on {host}:{port} ({started['error']}); give another --port")
    server = started["server"]
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    return DashboardServer(server, thread, f"http://{shown}:{server.port}/", latencies)
