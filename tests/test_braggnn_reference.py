"""Published BraggNN weights give the authors' positions.

The reference is written here from the conventions of the authors'
implementation (github.com/lzhengchun/BraggNN, ``model.py`` and
``dataset.py``; Liu et al., IUCrJ 9, 104 (2022)):

- network: conv 3x3 (1 -> 64) -> non-local block (theta, phi and g all
  computed by ``theta_layer``; softmax over the last axis; output
  ``x + out_cnn(.)``) -> LeakyReLU(0.01) -> conv 3x3 (64 -> 32) -> LeakyReLU
  -> conv 3x3 (32 -> 8) -> LeakyReLU -> flatten -> dense layers with
  LeakyReLU -> dense to 2 outputs.  The first convolution's activation is
  applied after the non-local block;
- input: the psz x psz patch whose corner is ``(int(row) - psz // 2,
  int(col) - psz // 2)`` around the peak's pixel, min-max scaled to [0, 1];
- output: ``(col, row) / psz`` of the centre in patch coordinates from the
  corner (pixel centres on integers).

A random state_dict with the published keys and shapes is converted with
braggflow's converter and run through ``locate(method="nn")``; positions
must equal the reference's within 1e-4 px.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braggflow.locate import locate  # noqa: E402
from braggflow.nn.architectures import published_shapes  # noqa: E402
from braggflow.schema import new_peak_table  # noqa: E402
from braggflow.simulate.patches import simulate_patches  # noqa: E402

PSZ = 11
FCSZ = (16, 8, 4, 2)


def _reference_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The authors' forward pass, from their documented layer order, on (N, 1, psz, psz) inputs."""
    f = torch.nn.functional

    def conv(name, t):
        return f.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"])

    y = conv("cnn_layers.0", x)
    n, c, h, w = y.shape
    theta = conv("nlb.theta_layer", y).reshape(n, c // 2, h * w)
    attention = torch.softmax(theta.transpose(1, 2) @ theta, dim=-1)  # (n, hw, hw); phi = g = theta
    z = (attention @ theta.transpose(1, 2)).transpose(1, 2).reshape(n, c // 2, h, w)
    y = y + conv("nlb.out_cnn", z)
    y = f.leaky_relu(y, 0.01)
    y = f.leaky_relu(conv("cnn_layers.2", y), 0.01)
    y = f.leaky_relu(conv("cnn_layers.4", y), 0.01)
    y = y.reshape(n, -1)
    dense = sorted({int(k.split(".")[1]) for k in state if k.startswith("dense_layers.")})
    for i, k in enumerate(dense):
        y = y @ state[f"dense_layers.{k}.weight"].T + state[f"dense_layers.{k}.bias"]
        if i < len(dense) - 1:
            y = f.leaky_relu(y, 0.01)
    return y


def _reference_positions(state, frame, peak_rows, peak_cols):
    """Frame (row, col) of each peak by the authors' cropping, normalisation and output convention."""
    feats, bases = [], []
    for r, c in zip(peak_rows, peak_cols):
        rb, cb = int(r) - PSZ // 2, int(c) - PSZ // 2
        crop = frame[rb:rb + PSZ, cb:cb + PSZ].astype(np.float64)
        feats.append((crop - crop.min()) / (crop.max() - crop.min()))
        bases.append((rb, cb))
    x = torch.from_numpy(np.array(feats, dtype=np.float32)[:, None])
    with torch.no_grad():
        out = _reference_forward(state, x).double().numpy()
    bases = np.array(bases, dtype=float)
    return out[:, 1] * PSZ + bases[:, 0], out[:, 0] * PSZ + bases[:, 1]


def _random_state(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in published_shapes(PSZ, FCSZ).items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = 1.0 / np.sqrt(max(fan_in, 1))
        state[name] = (torch.rand(shape, generator=gen) * 2 - 1) * scale * (2.0 if len(shape) > 1 else 1.0)
    state["dense_layers.8.bias"] = torch.tensor([0.5, 0.5])  # outputs near the patch centre
    return state


def test_converted_random_weights_reproduce_the_reference(tmp_path):
    from braggflow.training.files import convert_weights

    state = _random_state(12)
    weights = tmp_path / "random-sz11.pth"
    torch.save(state, weights)
    model = convert_weights(weights, tmp_path / "random-sz11.pt", calibrate=False)
    ps = simulate_patches(40, kind="isotropic", seed=13, size=PSZ)
    # place the patches in a frame at known pixels, far apart
    frame = np.full((400, 400), 10.0, dtype=np.float32)
    rows, cols = [], []
    for k, patch in enumerate(ps.data):
        r0, c0 = 30 + 40 * (k // 8), 30 + 40 * (k % 8)
        frame[r0 - 5:r0 + 6, c0 - 5:c0 + 6] = patch
        rows.append(r0)
        cols.append(c0)
    table = new_peak_table(len(rows), row=np.array(rows, float), col=np.array(cols, float))
    ours = locate(frame, table, method="nn", model=str(model), backend="torch")
    ref_row, ref_col = _reference_positions(state, frame, rows, cols)
    assert np.all(np.isfinite(ref_row))
    spread = np.std(ref_row - np.array(rows))
    assert spread > 0.03  # the random network's outputs depend on the patch
    np.testing.assert_allclose(ours["row"].to_numpy(), ref_row, atol=1e-4)
    np.testing.assert_allclose(ours["col"].to_numpy(), ref_col, atol=1e-4)
