"""run --workers: the local Dask cluster serves no dashboard and no HTTP routes, and listens on loopback only."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from braggflow.io.results import read_status
from braggflow.simulate.frames import simulate_series, write_nexus

psutil = pytest.importorskip("psutil")
pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(300)


def listening(process) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets a process and its children listen on."""
    found = []
    for p in [process, *process.children(recursive=True)]:
        try:
            found += [(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="tcp") if c.status == "LISTEN"]
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_workers_run_serves_nothing_on_8787(tmp_path, monkeypatch):
    import braggflow.pipeline as pipeline

    source = tmp_path / "sim.h5"
    write_nexus(source, simulate_series(4, shape=(96, 96), n_peaks=5, seed=4))
    clusters = []
    make = pipeline._local_cluster

    def keep(workers):
        clusters.append(make(workers))
        return clusters[-1]

    monkeypatch.setattr(pipeline, "_local_cluster", keep)
    sockets, answers = [], {}

    def look(done, total, peaks):
        if sockets or not clusters:  # the first frame is analysed before the cluster starts
            return
        sockets.extend(listening(psutil.Process()))
        port = clusters[0].scheduler.http_server.port
        for route in ("/info/main/workers.html", "/json/identity.json", "/health", "/metrics", "/status"):
            try:
                answers[route] = urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=5).status
            except urllib.error.HTTPError as exc:
                answers[route] = exc.code

    out = tmp_path / "R.h5"
    pipeline.run(str(source), output=out, workers=1, progress=look)
    assert read_status(out) == "complete"
    assert sockets, "no listening socket seen during the run"
    assert all(port != 8787 for _, port in sockets), sockets
    assert all(address == "127.0.0.1" for address, _ in sockets), sockets  # nothing on other interfaces
    assert set(answers.values()) == {404}, answers  # the scheduler's HTTP server has no route
