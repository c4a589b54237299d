"""Network inputs, targets, augmentation, forward pass and losses of the training loop.

Losses: ``braggnn`` is trained as published (mean squared error of the
normalised centre); ``locnet`` with a Gaussian negative log-likelihood of
the centre given its predicted log-variance (Nix and Weigend, ICNN 1994),
after ``warmup_epochs`` of squared error, plus a small squared error on the
log widths.
"""

from __future__ import annotations

import numpy as np

from braggflow.training.sets import LabelledPatches

__all__ = ["network_inputs", "training_targets", "augment", "forward", "loss", "predicted_centres"]


def network_inputs(arch: str, patches: LabelledPatches) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of an architecture for training patches.

    Parameters
    ----------
    arch : {"locnet", "braggnn"}
    patches : LabelledPatches
        ``N`` patches of side ``s``.

    Returns
    -------
    planes : (N, C, s, s) ndarray of float32
        ``braggnn``: one min-max normalised plane; ``locnet``: the two planes
        of the robust features.
    scalars : (N, k) ndarray of float32
        ``locnet``: the scalar features; ``braggnn``: none (``k = 0``).
    """
    from braggflow.nn.preprocess import check_patches, minmax_normalise, robust_features

    data, mask = check_patches(patches.data, patches.mask)
    n, s, _ = data.shape
    if arch == "braggnn":
        return minmax_normalise(data, mask), np.zeros((n, 0), np.float32)
    f = robust_features(data, mask, gain=patches.gain)
    return f[:, : 2 * s * s].reshape(n, 2, s, s).copy(), f[:, 2 * s * s :].copy()


def training_targets(patches: LabelledPatches) -> np.ndarray:
    """The training targets of labelled patches.

    Parameters
    ----------
    patches : LabelledPatches
        ``N`` patches of side ``s``.

    Returns
    -------
    targets : (N, 4) ndarray of float32
        Centre offset from the central pixel (row, col), px, and the natural
        log of the widths (sigma_row, sigma_col; NaN where unknown).
    """
    c = patches.data.shape[1] // 2
    return np.stack(
        [patches.row - c, patches.col - c, np.log(patches.sigma_row), np.log(patches.sigma_col)], axis=1
    ).astype(np.float32)


def augment(planes, targets, generator):
    """A random symmetry of the square per sample: flips and transposition.

    Parameters
    ----------
    planes : (B, C, s, s) torch.Tensor
    targets : (B, 4) torch.Tensor
        As :func:`training_targets`; flipped with the planes (widths swapped by a transposition).
    generator : torch.Generator
        Source of the random choices (3 per sample).

    Returns
    -------
    planes : (B, C, s, s) torch.Tensor
    targets : (B, 4) torch.Tensor
    """
    import torch

    b = planes.shape[0]
    flips = torch.rand(b, 3, generator=generator) < 0.5
    fr, fc, tr = flips[:, 0], flips[:, 1], flips[:, 2]
    planes = torch.where(fr[:, None, None, None], planes.flip(2), planes)
    planes = torch.where(fc[:, None, None, None], planes.flip(3), planes)
    planes = torch.where(tr[:, None, None, None], planes.transpose(2, 3), planes)
    t = targets.clone()
    t[:, 0] = torch.where(fr, -t[:, 0], t[:, 0])
    t[:, 1] = torch.where(fc, -t[:, 1], t[:, 1])
    swapped = t[:, [1, 0, 3, 2]]
    t = torch.where(tr[:, None], swapped, t)
    return planes, t


def forward(network, arch: str, planes, scalars):
    """The network's output for a batch.

    Parameters
    ----------
    network : torch.nn.Module
    arch : {"locnet", "braggnn"}
    planes : (B, C, s, s) torch.Tensor
    scalars : (B, k) torch.Tensor
        Appended to the flattened planes (``locnet``); unused by ``braggnn``.

    Returns
    -------
    out : (B, m) torch.Tensor
        ``braggnn``: (col, row) / s; ``locnet``: centre offsets (row, col),
        their log-variances, then log widths when the network predicts them.
    """
    import torch

    if arch == "braggnn":
        return network(planes)
    return network(torch.cat([planes.flatten(1), scalars], dim=1))


def loss(arch: str, out, t, size: int, *, likelihood: bool, width_weight: float):
    """The training loss of a batch.

    Parameters
    ----------
    arch : {"locnet", "braggnn"}
    out : (B, m) torch.Tensor
        Network output (:func:`forward`).
    t : (B, 4) torch.Tensor
        Targets (:func:`training_targets`).
    size : int
        Patch side, px.
    likelihood : bool
        ``locnet``: Gaussian negative log-likelihood of the centre; otherwise
        (warm-up) its squared error, the variance still trained by the likelihood.
    width_weight : float
        ``locnet``: weight of the squared error of the log widths (known ones only).

    Returns
    -------
    loss : () torch.Tensor
    """
    import torch

    if arch == "braggnn":
        c = size // 2
        # published target: (col, row) / size
        label = torch.stack([(t[:, 1] + c) / size, (t[:, 0] + c) / size], dim=1)
        return torch.mean((out - label) ** 2)
    mu, logvar = out[:, :2], out[:, 2:4].clamp(-20.0, 6.0)
    sq = (mu - t[:, :2]) ** 2
    if likelihood:
        value = 0.5 * (logvar + sq * torch.exp(-logvar)).mean()
    else:  # warm-up: squared error for the centre, likelihood for the variance only
        value = sq.mean() + 0.5 * (logvar + sq.detach() * torch.exp(-logvar)).mean()
    if out.shape[1] >= 6 and width_weight > 0:
        known = torch.isfinite(t[:, 2:4])
        if known.any():
            dw = (out[:, 4:6] - torch.nan_to_num(t[:, 2:4])) ** 2
            value = value + width_weight * dw[known].mean()
    return value


def predicted_centres(arch: str, out, size: int) -> np.ndarray:
    """Predicted centres of a batch.

    Parameters
    ----------
    arch : {"locnet", "braggnn"}
    out : (N, m) torch.Tensor
        Network output (:func:`forward`).
    size : int
        Patch side, px.

    Returns
    -------
    offsets : (N, 2) ndarray of float64
        (drow, dcol) offsets from the central pixel, px.
    """
    o = out.detach().cpu().numpy().astype(np.float64)
    if arch == "braggnn":
        c = size // 2
        return np.stack([o[:, 1] * size - c, o[:, 0] * size - c], axis=1)
    return o[:, :2]
