"""The web dashboard: what it computes from a results file, and a real browser following a live watch.

The browser test drives Debian's headless Chromium through Selenium
(packages ``chromium`` and ``chromium-driver``; nothing is downloaded).  Outside
CI it skips, saying why, where they are missing; with
``BRAGGFLOW_REQUIRE_BROWSER=1`` (set by ``.ci/run``) such a skip is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from braggflow.io.results import ResultsWriter, read_frames
from braggflow.profiles.render import peak_profile

SIZE = 128

DEEP_FRAMES = """
function find(root) {
  const hit = root.querySelector('#frames');
  if (hit) return hit.textContent;
  for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) { const t = find(el.shadowRoot); if (t !== null) return t; }
  }
  return null;
}
return find(document);
"""


def _peaks_table(frame: int, n: int, rng) -> pd.DataFrame:
    from braggflow.schema import conform

    return conform(pd.DataFrame({"frame": np.full(n, frame, np.int64), "row": rng.uniform(0, 99, n),
                                 "col": rng.uniform(0, 99, n), "intensity": rng.uniform(1, 10, n)}))


def test_results_view_counts_hits_and_follows_a_file_being_written(tmp_path):
    """Hits follow the >= N rule, the moving hit rate is the closed form, new frames are seen as they are journaled."""
    from braggflow.dashboard import ResultsView

    rng = np.random.default_rng(3)
    out = tmp_path / "R.h5"
    counts = [12, 3, 0, 15, 10, 9]
    view = ResultsView(out, hit_peaks=10)
    assert not view.update() and view.n_frames == 0 and view.error  # no file yet: said, not raised
    writer = ResultsWriter(out, sources=[], overwrite=True, flush_frames=1)
    for i, n in enumerate(counts[:3]):
        writer.add(i, _peaks_table(i, n, rng), {"n_peaks": n})
    writer.flush()
    assert view.update() and view.n_frames == 3
    for i, n in enumerate(counts[3:], start=3):
        writer.add(i, _peaks_table(i, n, rng), {"n_peaks": n})
    writer.close()
    assert view.update() and view.n_frames == 6
    np.testing.assert_array_equal(view.hits(), [True, False, False, True, True, False])
    np.testing.assert_allclose(view.hit_rate(window=2), [1, 0.5, 0, 0.5, 1, 0.5])
    assert view.latest_frame() == 5 and len(view.latest_peaks()) == 9
    hist, edges, label = view.radial()  # no geometry: distance from the centre of the frame
    assert "px" in label and hist.sum() == sum(counts)
    from braggflow.io.results import read_peaks

    peaks = read_peaks(out)  # no frame shape recorded: the distance from (0, 0)
    np.testing.assert_array_equal(hist, np.histogram(np.hypot(peaks["row"], peaks["col"]), bins=edges)[0])
    from braggflow.cli.dashboard import summary_text

    text = summary_text(view)
    assert "6 frames" in text and f"peaks: {sum(counts)}" in text and "1 frames without peaks" in text
    assert "hits (>= 10 peaks): 3 of 6, hit rate 0.500" in text


def test_phase_per_frame_is_the_most_common_label():
    from braggflow.dashboard import PhaseCounts, frame_phases

    peaks = pd.DataFrame({"frame": [0, 0, 0, 1, 1, 2], "phase": ["Zr", "Zr", "ZrO2", None, "ZrO2", ""]})
    phases = frame_phases(peaks)
    assert phases["frame"].tolist() == [0, 1] and phases["phase"].tolist() == ["Zr", "ZrO2"]
    np.testing.assert_allclose(phases["fraction"], [2 / 3, 1 / 2])
    counts = PhaseCounts()  # the same from the table in parts that split frame 0
    for part in (peaks.iloc[:2], peaks.iloc[2:4], peaks.iloc[4:]):
        counts.add(part)
    pd.testing.assert_frame_equal(counts.table(), phases)


def test_radial_histogram_widens_by_merging_bins_and_keeps_every_count():
    """Values added in batches of growing range: the counts are np.histogram's of all of them on the final edges."""
    from braggflow.dashboard import RadialHistogram

    rng = np.random.default_rng(5)
    hist, seen = RadialHistogram(bins=60), []
    for top in (0.8, 0.9, 3.5, 2.0, 40.0, 7.0):
        values = rng.uniform(0, top, 500)
        hist.add(np.concatenate([values, [np.nan, -1.0]]))  # left out
        seen.append(values)
    every = np.concatenate(seen)
    edges = hist.edges
    assert edges.size == 61 and edges[0] == 0 and edges[-1] > every.max()
    assert edges[-1] <= 2 * every.max() * 60 / 59  # the range widened only as far as needed
    np.testing.assert_array_equal(hist.counts, np.histogram(every, bins=edges)[0])


def test_results_view_holds_no_more_peaks_as_the_file_grows(tmp_path, monkeypatch):
    """A view following a run reads only the new frames' peaks at each update, and what it holds stays the same size.

    Truth: the peaks written (q, phase known); the histogram, the latest peaks and the phases are compared with
    what the whole peak table gives, read once at the end.
    """
    import braggflow.io.results as results
    import braggflow.io.store as store
    from braggflow.dashboard import ResultsView, frame_phases

    rng = np.random.default_rng(8)
    out = tmp_path / "R.h5"
    writer = ResultsWriter(out, sources=[], overwrite=True, flush_frames=1)
    view = ResultsView(out, hit_peaks=10)
    real_parts = store.read_peak_parts
    read_rows: list[int] = []

    def counted(*args, **kwargs):
        for part, covered in real_parts(*args, **kwargs):
            read_rows[-1] += len(part)
            yield part, covered

    def refuse(*args, **kwargs):
        raise AssertionError("the view read the whole peak table")

    monkeypatch.setattr(store, "read_peak_parts", counted)
    monkeypatch.setattr(store, "_read_all", refuse)
    monkeypatch.setattr(results, "read_peaks", refuse)
    held, frame = [], 0
    for step in range(8):
        added = 0
        for _ in range(10):
            n = int(rng.integers(0, 30))
            table = _peaks_table(frame, n, rng)
            table["q"] = rng.uniform(0.5, 1.0 + step, n)  # the range grows as the run goes on
            table["phase"] = rng.choice(["Zr", "ZrO2", None], n)
            writer.add(frame, table, {"n_peaks": n})
            frame, added = frame + 1, added + n
        writer.flush()
        read_rows.append(0)
        assert view.update() and view.n_frames == frame
        assert read_rows[-1] == added  # the peaks of the frames added since the last update, no others
        held.append((view.histogram.counts.nbytes, len(view.latest)))
        assert view.latest_frame() == frame - 1
    assert len({nbytes for nbytes, _ in held}) == 1  # the histogram's memory does not grow
    read_rows.append(0)
    assert not view.update() and read_rows[-1] == 0  # nothing new: no peak read
    writer.close()
    monkeypatch.undo()
    peaks = results.read_peaks(out)
    hist, edges, label = view.radial()
    assert label.startswith("q") and hist.sum() == len(peaks)
    np.testing.assert_array_equal(hist, np.histogram(peaks["q"], bins=edges)[0])
    last = peaks[peaks["frame"] == frame - 1]
    np.testing.assert_allclose(view.latest_peaks()["row"], last["row"])
    np.testing.assert_allclose(view.latest_peaks()["q"], last["q"])
    pd.testing.assert_frame_equal(view.phases(), frame_phases(peaks))
    fresh = ResultsView(out)  # the finished file in one update: the snapshot read in parts
    monkeypatch.setattr(store, "PART_ROWS", 37)
    assert fresh.update()
    np.testing.assert_array_equal(fresh.radial()[0].sum(), len(peaks))
    np.testing.assert_allclose(fresh.latest_peaks()["row"], last["row"])
    pd.testing.assert_frame_equal(fresh.phases(), frame_phases(peaks))


def test_peak_parts_are_the_peak_table_of_the_frames_asked(tmp_path):
    """Snapshot (in parts) and journal together give read_peaks' rows of the frames asked, each frame once."""
    from braggflow.io.results import read_peaks
    from braggflow.io.store import read_peak_parts

    rng = np.random.default_rng(2)
    out = tmp_path / "R.h5"
    writer = ResultsWriter(out, sources=[], overwrite=True, flush_frames=1)
    for i in range(6):
        writer.add(i, _peaks_table(i, 7 + i, rng), {"n_peaks": 7 + i})
    writer.close(complete=False)  # the snapshot holds frames 0-5
    writer = ResultsWriter(out, sources=[], resume=True, flush_frames=1)
    for i in range(6, 9):
        writer.add(i, _peaks_table(i, 5, rng), {"n_peaks": 5})
    writer.flush()  # frames 6-8 in the journal only
    every = read_peaks(out)
    assert not list(read_peak_parts(out, {20}))  # a frame the file does not hold
    for asked in (None, {1, 4, 7}, {8}):
        parts = list(read_peak_parts(out, asked, columns=("row", "col"), part_rows=10))
        got = pd.concat([p for p, _ in parts], ignore_index=True).sort_values(["frame", "row"]).reset_index(drop=True)
        truth = every if asked is None else every[every["frame"].isin(asked)]
        truth = truth[["frame", "row", "col"]].sort_values(["frame", "row"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, truth, check_dtype=False)
        assert set().union(*(c for _, c in parts)) == (set(range(9)) if asked is None else asked)
    writer.close()


def test_other_address_needs_host_and_warns(tmp_path):
    """Without --host the server binds 127.0.0.1 only; --host 0.0.0.0 prints a warning."""
    from braggflow.cli.dashboard import start_dashboard

    cmd = [sys.executable, "-c", "from braggflow.cli import main; main()", "dashboard", str(tmp_path / "R.h5"),
           "--host", "0.0.0.0", "--port", "0", "--duration", "0.5"]
    (tmp_path / "R.h5.journal").mkdir()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" in done.stderr and "0.0.0.0" in done.stderr
    server = start_dashboard(tmp_path / "R.h5", host=None, port=0)
    try:
        assert server.url.startswith("http://127.0.0.1:")
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # this machine's outward address
            try:
                probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
                other = probe.getsockname()[0]
            except OSError:
                other = "127.0.0.1"
        if other.startswith("127."):
            pytest.skip("this machine has no address but loopback")
        with socket.socket() as s:  # the port is not served on that interface
            assert s.connect_ex((other, port)) != 0
    finally:
        server.stop()


def _browser():
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    reason = None
    if missing:
        reason = f"no headless browser ({', '.join(missing)} missing): apt-get install chromium chromium-driver"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            reason = "selenium is not installed (the dev extra)"
    if reason:
        if os.environ.get("BRAGGFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BRAGGFLOW_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1150"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def _tif(folder, index: int, rng) -> None:
    from fabio.tifimage import TifImage

    idx = np.arange(SIZE)
    frame = rng.poisson(5.0, (SIZE, SIZE)).astype(np.float64)
    for r, c in rng.uniform(15, SIZE - 15, (6, 2)):
        frame += rng.uniform(2000, 8000) * peak_profile(idx, idx, row=r, col=c, sigma_row=1.3, sigma_col=1.3)
    tmp = folder.parent / f"tmp_{index:04d}.tif"
    TifImage(data=np.round(frame).astype(np.uint16)).write(str(tmp))
    os.replace(tmp, folder / f"frame_{index:04d}.tif")


def _page_count(driver) -> int | None:
    text = driver.execute_script(DEEP_FRAMES)
    return int(text) if text not in (None, "") else None


def _wait_for(driver, want: int, timeout: float = 60.0) -> int | None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _page_count(driver)
        if seen == want:
            return seen
        time.sleep(0.25)
    return seen


def test_browser_page_follows_a_live_watch(tmp_path):
    """Chromium shows the frames count of ``watch --dashboard`` while frames arrive: 4, then 8."""
    driver = _browser()
    folder = tmp_path / "detector"
    folder.mkdir()
    out = tmp_path / "live.h5"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    watch = subprocess.Popen([sys.executable, "-c", "from braggflow.cli import main; main()", "watch", str(folder),
                              "-o", str(out), "--dashboard", "--port", str(port), "--idle-timeout", "120",
                              "--poll", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rng = np.random.default_rng(5)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if watch.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not come up: {watch.communicate()[0]}")
                time.sleep(0.2)
        driver.get(url)
        assert _wait_for(driver, 0) == 0
        for i in range(4):
            _tif(folder, i, rng)
        assert _wait_for(driver, 4) == 4
        assert driver.title == "braggflow: 4 frames"
        for i in range(4, 8):
            _tif(folder, i, rng)
        assert _wait_for(driver, 8) == 8
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        driver.quit()
        watch.send_signal(signal.SIGINT)
        log, _ = watch.communicate(timeout=60)
    assert len(read_frames(out)) == 8, log
