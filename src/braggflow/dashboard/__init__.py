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

__all__ = ["ResultsView", "DashboardServer", "serve", "make_document", "DEFAULT_PORT", "HIT_PEAKS"]

#: port of ``braggflow dashboard`` and ``watch --dashboard`` unless --port is given
DEFAULT_PORT = 8050
#: a frame with at least this many peaks is a hit (OM's rule: a minimum peak count), as the frames table's default
HIT_PEAKS = HIT_MIN_PEAKS
#: frames in the moving window of the hit rate
HIT_WINDOW = 50


@dataclass
class ResultsView:
    """What the dashboard shows of one results file, refreshed by :meth:`update`.

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
    peaks : pandas.DataFrame
        The peak table as last read.
    arrivals : list of (float, int)
        (time.monotonic(), frames in the file) at each update that saw new frames.
    """

    path: Path
    hit_peaks: int = HIT_PEAKS
    frames: pd.DataFrame = field(default_factory=pd.DataFrame)
    peaks: pd.DataFrame = field(default_factory=pd.DataFrame)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    error: str = ""
    live_latency: Any = None
    _series: dict[str, Any] = field(default_factory=dict)

    def update(self) -> bool:
        """Read the file again; True when it holds frames it did not hold before.

        A file that does not exist yet, or cannot be read at this moment, leaves
        the view as it was (:attr:`error` says why).
        """
        from braggflow.errors import BraggflowError
        from braggflow.io.results import read_frames, read_peaks

        try:
            frames = read_frames(self.path)
            peaks = read_peaks(self.path) if len(frames) != len(self.frames) or not len(self.peaks) else self.peaks
        except (BraggflowError, OSError) as exc:
            self.error = str(exc)
            return False
        self.error = ""
        new = len(frames) != len(self.frames)
        self.frames, self.peaks = frames, peaks
        if new:
            self.arrivals.append((time.monotonic(), len(frames)))
            del self.arrivals[:-20]
        return new

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
        """Peaks of :meth:`latest_frame`."""
        latest = self.latest_frame()
        if latest is None or not len(self.peaks):
            return self.peaks.iloc[:0]
        return self.peaks[self.peaks["frame"] == latest]

    def radial(self) -> tuple[np.ndarray, str]:
        """The peaks' q (1/angstrom) when known, else their distance from the frame centre (px); and its label."""
        if not len(self.peaks):
            return np.zeros(0), "q (1/Å)"
        if "q" in self.peaks and np.isfinite(self.peaks["q"].to_numpy(float)).any():
            q = self.peaks["q"].to_numpy(float)
            return q[np.isfinite(q)], "q (1/Å)"
        shape = self._frame_shape()
        r0, c0 = ((shape[0] - 1) / 2, (shape[1] - 1) / 2) if shape else (0.0, 0.0)
        r = np.hypot(self.peaks["row"].to_numpy(float) - r0, self.peaks["col"].to_numpy(float) - c0)
        return r[np.isfinite(r)], "distance from the frame centre (px)"

    def phases(self) -> pd.DataFrame:
        """Per frame, the most common ``phase`` of its labelled peaks (frame, phase, fraction); empty when none."""
        if not len(self.peaks) or "phase" not in self.peaks:
            return pd.DataFrame({"frame": [], "phase": [], "fraction": []})
        labelled = self.peaks.dropna(subset=["phase"])
        labelled = labelled[labelled["phase"].astype(str) != ""]
        if not len(labelled):
            return pd.DataFrame({"frame": [], "phase": [], "fraction": []})
        counts = labelled.groupby(["frame", "phase"], observed=True).size().rename("n").reset_index()
        top = counts.sort_values("n", ascending=False).drop_duplicates("frame").sort_values("frame")
        totals = self.peaks.groupby("frame").size()
        top["fraction"] = top["n"].to_numpy() / totals.reindex(top["frame"]).to_numpy()
        return top[["frame", "phase", "fraction"]].reset_index(drop=True)

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
        values, label = view.radial()
        if values.size:
            counts, edges = np.histogram(values, bins=60)
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
