"""Network architectures of braggflow's localizer networks (an MLP and the published BraggNN CNN).

Two architectures are defined here:

``braggnn``
    The published BraggNN (Liu et al., IUCrJ 9, 104 (2022)): a 3 x 3
    convolution, a non-local (self-attention) block, two more 3 x 3
    convolutions and a stack of dense layers ending in two outputs.  Module
    and parameter names follow the reference implementation, so a published
    ``state_dict`` (for example ``fc16_8_4_2-sz11.pth``) loads with
    ``strict=True``.  Its input is a min-max normalised patch ``(N, 1, s, s)``
    and its output ``(N, 2)`` is ``(col / s, row / s)`` of the peak centre in
    patch coordinates (pixel centres on integers), as in the reference
    implementation's training labels.

``locnet``
    braggflow's own localizer: a small multilayer perceptron on a robustly
    normalised patch (background-subtracted, divided by the peak amplitude),
    the patch mask as a second plane, and two scalars that carry the photon
    level (log amplitude and log background).  It predicts the centre offset
    from the central pixel and a log-variance per axis (trained with a
    Gaussian negative log-likelihood, so its errors are calibrated), and
    optionally the log widths.  It is about 30x cheaper than ``braggnn``
    per patch.

Torch is imported by this module; import it only where a network is needed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["NLB", "BraggNN", "LocNet", "ARCHITECTURES", "build_network", "published_shapes"]


class NLB(nn.Module):
    """Non-local (self-attention) block of BraggNN.

    Parameters
    ----------
    in_ch : int
        Input (and output) channels.
    shared_projection : bool
        The reference implementation computes theta, phi and g all with
        ``theta_layer`` (``phi_layer`` and ``g_layer`` exist, and are in the
        published ``state_dict``, but are unused).  Published weights were
        trained that way, so True (the default) reproduces it; False uses the
        three projections of the non-local-network paper.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022); Wang et al., "Non-local neural
    networks", CVPR (2018).
    """

    def __init__(self, in_ch: int, *, shared_projection: bool = True) -> None:
        super().__init__()
        half = in_ch // 2
        self.shared_projection = shared_projection
        self.theta_layer = nn.Conv2d(in_ch, half, kernel_size=1)
        self.phi_layer = nn.Conv2d(in_ch, half, kernel_size=1)
        self.g_layer = nn.Conv2d(in_ch, half, kernel_size=1)
        self.atten_act = nn.Softmax(dim=-1)
        self.out_cnn = nn.Conv2d(half, in_ch, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ``x + out_cnn(softmax(theta^T phi) g)``, shape kept."""
        n, c, h, w = x.shape
        theta = self.theta_layer(x).flatten(2)  # (n, c/2, hw)
        if self.shared_projection:
            phi = theta
            g = theta
        else:
            phi = self.phi_layer(x).flatten(2)
            g = self.g_layer(x).flatten(2)
        attention = self.atten_act(torch.bmm(theta.transpose(1, 2), phi))  # (n, hw, hw)
        y = torch.bmm(g, attention.transpose(1, 2))  # (n, c/2, hw)
        return x + self.out_cnn(y.reshape(n, c // 2, h, w))


class BraggNN(nn.Module):
    """The published BraggNN network (state_dict compatible).

    Parameters
    ----------
    imgsz : int
        Patch side in px (odd; 11 in the published weights).
    fcsz : tuple of int
        Widths of the dense layers (published files: ``(16, 8, 4, 2)`` and
        ``(32, 16, 8, 4)``; reference default ``(64, 32, 16, 8)``).
    shared_projection : bool
        See :class:`NLB`.
    published_order : bool
        True: the reference implementation's layer order, conv -> non-local
        block -> LeakyReLU -> conv -> ... (its forward pass runs only the
        first convolution before the block, so the first activation comes
        after it); published weights need it, and ``braggflow
        convert-weights`` sets it.  False: the activation before the block,
        the order braggflow's own ``braggnn-sim`` was trained with.

    Notes
    -----
    Input: ``(N, 1, imgsz, imgsz)`` float32, each patch min-max normalised to
    [0, 1].  Output: ``(N, 2)``: ``(col, row) / imgsz`` of the peak centre in
    patch coordinates (pixel centres on integers).

    References
    ----------
    Liu, Sharma, Park, Kenesei, Miceli, Almer, Kettimuthu and Foster,
    "BraggNN: fast X-ray Bragg peak analysis using deep learning",
    IUCrJ 9, 104-113 (2022).
    """

    arch = "braggnn"
    input_kind = "minmax"
    predicts_error = False

    def __init__(self, imgsz: int = 11, fcsz: tuple[int, ...] = (64, 32, 16, 8), *,
                 shared_projection: bool = True, published_order: bool = False) -> None:
        super().__init__()
        self.published_order = bool(published_order)
        if imgsz < 7:
            raise ValueError(f"BraggNN needs imgsz >= 7 (three 3x3 valid convolutions), got {imgsz}")
        self.imgsz = int(imgsz)
        self.fcsz = tuple(int(v) for v in fcsz)
        channels = (1, 64, 32, 8)
        conv = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            conv += [nn.Conv2d(cin, cout, kernel_size=3), nn.LeakyReLU(negative_slope=0.01)]
        self.cnn_layers = nn.Sequential(*conv)
        self.nlb = NLB(channels[1], shared_projection=shared_projection)
        side = self.imgsz - 6
        widths = (side * side * channels[-1],) + self.fcsz
        dense = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            dense += [nn.Linear(cin, cout), nn.LeakyReLU(negative_slope=0.01)]
        dense.append(nn.Linear(widths[-1], 2))
        self.dense_layers = nn.Sequential(*dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, s, s)`` normalised patches -> ``(N, 2)`` (col, row) / s."""
        if self.published_order:
            y = self.nlb(self.cnn_layers[0](x))
            rest = self.cnn_layers[1:]
        else:
            y = self.nlb(self.cnn_layers[1](self.cnn_layers[0](x)))
            rest = self.cnn_layers[2:]
        for layer in rest:
            y = layer(y)
        return self.dense_layers(y.flatten(1))


def published_shapes(imgsz: int = 11, fcsz: tuple[int, ...] = (16, 8, 4, 2)) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a published BraggNN ``state_dict``.

    Parameters
    ----------
    imgsz : int
        Patch side, px.
    fcsz : tuple of int
        Dense-layer widths.

    Returns
    -------
    shapes : dict of str -> tuple of int
        For example ``"cnn_layers.0.weight": (64, 1, 3, 3)``,
        ``"nlb.theta_layer.weight": (32, 64, 1, 1)``,
        ``"dense_layers.8.weight": (2, 2)``.

    References
    ----------
    Liu et al., IUCrJ 9, 104 (2022); github.com/lzhengchun/BraggNN.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    channels = (1, 64, 32, 8)
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        shapes[f"cnn_layers.{2 * i}.weight"] = (cout, cin, 3, 3)
        shapes[f"cnn_layers.{2 * i}.bias"] = (cout,)
    for name in ("theta_layer", "phi_layer", "g_layer"):
        shapes[f"nlb.{name}.weight"] = (32, 64, 1, 1)
        shapes[f"nlb.{name}.bias"] = (32,)
    shapes["nlb.out_cnn.weight"] = (64, 32, 1, 1)
    shapes["nlb.out_cnn.bias"] = (64,)
    side = imgsz - 6
    widths = (side * side * 8,) + tuple(fcsz) + (2,)
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        shapes[f"dense_layers.{2 * i}.weight"] = (cout, cin)
        shapes[f"dense_layers.{2 * i}.bias"] = (cout,)
    return shapes


class LocNet(nn.Module):
    """braggflow's localizer with a per-axis uncertainty (a small MLP).

    Parameters
    ----------
    size : int
        Patch side, px (odd).
    hidden : tuple of int
        Widths of the hidden layers.
    n_scalars : int
        Scalar features appended to the two flattened planes (see
        :func:`braggflow.nn.preprocess.robust_features`).
    width_outputs : bool
        Also predict log widths (sigma_row, sigma_col), px.
    symmetries : {1, 2, 4, 8}
        In eval mode, average the prediction over this many symmetries of
        the square (test-time augmentation): 2 = identity and 180-degree
        rotation; 4 = these, the transpose and the anti-transpose; 8 = all
        flips and transpositions.  Each symmetry's centre is mapped back to the patch
        and averaged; the variance is the mean predicted variance plus the
        variance of the centres over the symmetries (law of total
        variance), so patches on which the symmetric views disagree get
        larger errors.  The weights are the same for any value (it is not
        part of the state_dict); training (``train()`` mode) uses one pass.

    Notes
    -----
    Input: ``(N, 2 * size**2 + n_scalars)`` float32 from
    :func:`braggflow.nn.preprocess.robust_features`.  Output ``(N, 4)``
    (or ``(N, 6)`` with widths): ``drow, dcol`` (px, from the central pixel),
    ``log_var_row, log_var_col`` (px^2), then ``log_sigma_row,
    log_sigma_col``.
    """

    arch = "locnet"
    input_kind = "robust"
    predicts_error = True

    def __init__(
        self,
        size: int = 11,
        hidden: tuple[int, ...] = (256, 256),
        n_scalars: int = 2,
        width_outputs: bool = True,
        symmetries: int = 1,
    ) -> None:
        super().__init__()
        self.size = int(size)
        self.hidden = tuple(int(v) for v in hidden)
        self.n_scalars = int(n_scalars)
        self.width_outputs = bool(width_outputs)
        if symmetries not in (1, 2, 4, 8):
            raise ValueError(f"symmetries must be 1, 2, 4 or 8, got {symmetries!r}")
        self.symmetries = int(symmetries)
        widths = (2 * self.size**2 + self.n_scalars,) + self.hidden
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(cin, cout), nn.SiLU()]
        n_out = 6 if self.width_outputs else 4
        layers.append(nn.Linear(widths[-1], n_out))
        self.layers = nn.Sequential(*layers)
        perm, swap, sign = _symmetry_tables(self.size, self.n_scalars, self.symmetries, n_out)
        self.register_buffer("_perm", perm, persistent=False)
        self.register_buffer("_swap", swap, persistent=False)
        self.register_buffer("_sign", sign, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` features -> ``(N, 4 or 6)`` (see class notes)."""
        if self.symmetries == 1 or self.training:
            return self.layers(x)
        n, s = x.shape[0], self.symmetries
        views = x[:, self._perm].reshape(n * s, x.shape[1])  # (N * S, F): each symmetric view
        out = self.layers(views).reshape(n, s, -1)
        out = torch.gather(out, 2, self._swap.unsqueeze(0).expand(n, -1, -1)) * self._sign  # back to the patch
        centre = out[:, :, :2].mean(dim=1)
        var = torch.exp(out[:, :, 2:4].clamp(-30.0, 10.0)).mean(dim=1) + out[:, :, :2].var(dim=1, unbiased=False)
        parts = [centre, torch.log(var)]
        if out.shape[2] > 4:
            parts.append(out[:, :, 4:].mean(dim=1))
        return torch.cat(parts, dim=1)


def _symmetry_tables(size: int, n_scalars: int, symmetries: int, n_out: int):
    """Feature permutations (S, F), output swaps (S, n_out) and signs (S, n_out) of LocNet's symmetries.

    Symmetry code k: bit 0 flips rows, bit 1 flips columns, bit 2 transposes
    (applied in that order to the patch and its mask plane).
    """
    codes = {1: [0], 2: [0, 3], 4: [0, 3, 4, 7], 8: list(range(8))}[symmetries]
    grid = np.arange(size * size).reshape(size, size)
    perms, swaps, signs = [], [], []
    for k in codes:
        g = grid
        if k & 1:
            g = g[::-1]
        if k & 2:
            g = g[:, ::-1]
        if k & 4:
            g = g.T
        plane = g.reshape(-1)
        perms.append(np.concatenate([plane, plane + size * size, 2 * size * size + np.arange(n_scalars)]))
        swap = np.arange(n_out).reshape(-1, 2)
        swaps.append((swap[:, ::-1] if k & 4 else swap).reshape(-1))
        sign = np.ones(n_out, np.float32)
        sign[0] = -1.0 if k & 1 else 1.0
        sign[1] = -1.0 if k & 2 else 1.0
        signs.append(sign)
    return (torch.as_tensor(np.array(perms), dtype=torch.long), torch.as_tensor(np.array(swaps), dtype=torch.long),
            torch.as_tensor(np.array(signs)))


ARCHITECTURES: dict[str, type[nn.Module]] = {"braggnn": BraggNN, "locnet": LocNet}


def build_network(arch: str, **arch_kwargs) -> nn.Module:
    """Instantiate an architecture by name.

    Parameters
    ----------
    arch : {"braggnn", "locnet"}
    **arch_kwargs
        Passed to the class (tuples may be given as lists).

    Returns
    -------
    network : torch.nn.Module, in eval mode

    Raises
    ------
    BraggflowError
        For an unknown architecture name or invalid arguments.
    """
    from braggflow.errors import BraggflowError

    if arch not in ARCHITECTURES:
        raise BraggflowError(f"unknown model architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in arch_kwargs.items()}
    try:
        network = ARCHITECTURES[arch](**kwargs)
    except TypeError as exc:
        raise BraggflowError(f"invalid arguments for architecture {arch!r}: {exc}") from None
    return network.eval()
