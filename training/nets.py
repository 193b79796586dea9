"""PyTorch models of gtag: a CNN on log-mel patches and a WaveNet-style net on the raw waveform.

Both return logits of shape ``(batch, n_labels)``; ``Probabilities`` wraps either with a softmax for
export, so the ONNX file outputs what gtag votes with.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gtag.audio.decode import WINDOW_SAMPLES
from gtag.audio.features import N_MELS, WINDOW_FRAMES


class GenreCNN(nn.Module):
    """Conv blocks (3x3 conv, BN, ReLU, 2x2 max-pool) on a ``(1, N_MELS, WINDOW_FRAMES)`` log-mel
    patch, then global average pooling, dropout and a linear head (the study's spectrogram CNN)."""

    input_shape = (1, N_MELS, WINDOW_FRAMES)

    def __init__(self, n_labels: int = 10, depth: int = 4, width: int = 16, dropout: float = 0.3):
        super().__init__()
        if not 1 <= depth <= 6:
            raise ValueError("depth must be 1..6: each block halves both axes of a 128x130 patch")
        blocks: list[nn.Module] = []
        in_ch = 1
        for i in range(depth):
            # Channels double per block up to 8x the base width: the deep blocks see a few pixels
            # only, where more channels cost little.
            out_ch = width * 2 ** min(i, 3)
            blocks += [
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),  # bias is redundant before BN
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_ch, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))  # global average pooling: any patch size works
        return self.head(self.dropout(h))


class ResidualBlock(nn.Module):
    """The study's WaveNet residual block: a dilated causal conv, a gated ``tanh * sigmoid``
    activation, then a 1x1 conv back onto the residual path and another to the skip path."""

    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.pad = (kernel_size - 1) * dilation  # left padding only: causal, length preserved
        self.dilated = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filt, gate = self.dilated(F.pad(x, (self.pad, 0))).chunk(2, dim=1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        # Scaling the sum by sqrt(1/2) keeps the residual path's variance constant with depth.
        return (x + self.residual(z)) * 0.5**0.5, self.skip(z)


class WaveNetClassifier(nn.Module):
    """WaveNet-style classifier on a ``(1, WINDOW_SAMPLES)`` raw waveform window at 22,050 Hz.

    - Input normalisation: each window is divided by its RMS (floored), because the log-mel CNN is
      loudness-invariant by construction and the GTZAN share mixes peak-normalised excerpts with
      original clips: level would otherwise be a variant cue, not a genre cue.
    - Strided front end: sample-level strided convs (BN, ReLU) and a max-pool bring the rate down
      by ``prod(front_strides) * pool`` (128x by default: 172 frames/s, 516 per window) so the
      dilated stacks run on a few hundred frames per window.
    - ``stacks`` stacks of residual blocks with dilations 1, 2, 4 ... 2**(layers-1); the receptive
      field is ``stacks * (kernel_size - 1) * (2**layers - 1) + 1`` frames (255 frames, 1.5 s, by
      default).
    - Sum of skips, ReLU, 1x1 conv, ReLU, global average pooling over time, dropout, linear head.
    """

    input_shape = (1, WINDOW_SAMPLES)

    def __init__(
        self,
        n_labels: int = 10,
        front_channels: tuple[int, ...] = (32, 48, 64),
        front_strides: tuple[int, ...] = (4, 4, 4),
        pool: int = 2,
        channels: int = 64,
        skip_channels: int = 64,
        kernel_size: int = 2,
        layers: int = 7,
        stacks: int = 2,
        dropout: float = 0.3,
        rms_floor: float = 1e-3,
    ):
        super().__init__()
        if len(front_channels) != len(front_strides):
            raise ValueError("front_channels and front_strides need one entry per front conv")
        self.rms_floor = rms_floor
        front: list[nn.Module] = []
        in_ch = 1
        for out_ch, stride in zip(front_channels, front_strides):
            # Kernel 2x the stride: neighbouring output frames overlap, as STFT frames do.
            front += [
                nn.Conv1d(in_ch, out_ch, 2 * stride, stride=stride, padding=stride // 2, bias=False),
                nn.BatchNorm1d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        if pool > 1:
            front.append(nn.MaxPool1d(pool))
        front.append(nn.Conv1d(in_ch, channels, 1))
        self.front = nn.Sequential(*front)
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, skip_channels, kernel_size, 2**i) for _ in range(stacks) for i in range(layers)
        )
        self.post = nn.Conv1d(skip_channels, skip_channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(skip_channels, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(self.rms_floor)
        h = self.front(x / rms)
        skips = 0
        for block in self.blocks:
            h, s = block(h)
            skips = skips + s
        h = F.relu(self.post(F.relu(skips))).mean(dim=2)
        return self.head(self.dropout(h))


class Probabilities(nn.Module):
    """Softmax over a classifier's logits: what the exported ONNX graph outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)
