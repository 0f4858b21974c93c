"""Networks: the residual CNN student on time-frequency images, and time-domain baselines.

Models declare their shape like braindecode's: ``n_chans``, ``n_outputs``
(classes), and the input size (``n_freqs`` x ``n_times`` for images,
``n_times`` for time series); :meth:`get_config` / :func:`~.methods.build_model`
round-trip a model's architecture through plain JSON.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualCNN", "LSTMNet", "Conv1DNet", "count_params"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scaled(width: int, n_chans: int) -> int:
    """The paper's layer width for 32+ input channels, narrower (down to a quarter) for fewer.

    The paper's widths were chosen for 128-channel EEG; at 4 channels (a Muse headband) they only add
    cost: a 1-D CNN of width 208 took 3 minutes to cross-validate 350 four-channel epochs on 2 cores.
    """
    return max(8, int(round(width * min(1.0, max(0.25, n_chans / 32)))))


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                     if (c_in != c_out or stride != (1, 1)) else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.skip(x))


class ResidualCNN(nn.Module):
    """Residual CNN on a (channels, freqs, times) image (Ferrante et al. 2023, §3.3).

    EEG channels are the image's input planes; convolutions run over frequency
    and time with filters increasing 64 -> 128 -> 224, then global average
    pooling and a fully connected classifier. About 1.1 M parameters at 128
    channels and 40 classes; the same layers fit 4 channels and 2 classes.

    Parameters
    ----------
    n_chans, n_outputs, n_freqs, n_times : int
        Input planes, classes, and the image's size.
    widths : tuple of int | None
        Filters of the stem and of each residual stage; None: the paper's (64, 128, 224) from 32
        input planes up, narrower below (:func:`scaled`).
    dropout : float
    """

    kind = "residual_cnn"

    def __init__(self, n_chans: int, n_outputs: int, n_freqs: int, n_times: int,
                 widths: tuple | None = None, dropout: float = 0.3):
        super().__init__()
        self.n_chans, self.n_outputs, self.n_freqs, self.n_times = n_chans, n_outputs, n_freqs, n_times
        widths = widths or tuple(scaled(w, n_chans) for w in (64, 128, 224))
        self.widths, self.dropout = tuple(widths), dropout
        w0, w1, w2 = widths
        self.input_norm = nn.BatchNorm2d(n_chans)
        self.stem = nn.Sequential(nn.Conv2d(n_chans, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0),
                                  nn.ReLU(inplace=True))
        self.stages = nn.Sequential(_ResBlock(w0, w0, (1, 1)), _ResBlock(w0, w1, (1, 2)), _ResBlock(w1, w2, (1, 2)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(w2, n_outputs))

    def forward(self, x):
        return self.head(self.stages(self.stem(self.input_norm(x))))

    def get_config(self) -> dict:
        return dict(kind=self.kind, n_chans=self.n_chans, n_outputs=self.n_outputs, n_freqs=self.n_freqs,
                    n_times=self.n_times, widths=list(self.widths), dropout=self.dropout)


class LSTMNet(nn.Module):
    """4-layer LSTM baseline on the time series (channels x times)."""

    kind = "lstm"

    def __init__(self, n_chans: int, n_outputs: int, n_times: int, hidden: int | None = None, layers: int = 4,
                 dropout: float = 0.3, downsample: int = 4):
        super().__init__()
        self.n_chans, self.n_outputs, self.n_times = n_chans, n_outputs, n_times
        hidden = hidden or scaled(184, n_chans)
        self.hidden, self.layers, self.dropout, self.downsample = hidden, layers, dropout, downsample
        self.pool = nn.AvgPool1d(downsample) if downsample > 1 else nn.Identity()
        self.lstm = nn.LSTM(n_chans, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.fc = nn.Linear(hidden, n_outputs)

    def forward(self, x):
        x = self.pool(x).transpose(1, 2)
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])

    def get_config(self) -> dict:
        return dict(kind=self.kind, n_chans=self.n_chans, n_outputs=self.n_outputs, n_times=self.n_times,
                    hidden=self.hidden, layers=self.layers, dropout=self.dropout, downsample=self.downsample)


class Conv1DNet(nn.Module):
    """4-layer temporal-convolution baseline on the time series."""

    kind = "conv1d"

    def __init__(self, n_chans: int, n_outputs: int, n_times: int, width: int | None = None, dropout: float = 0.3):
        super().__init__()
        width = width or scaled(208, n_chans)
        self.n_chans, self.n_outputs, self.n_times, self.width, self.dropout = n_chans, n_outputs, n_times, width, dropout
        layers, c = [nn.BatchNorm1d(n_chans)], n_chans
        for k in range(4):
            layers += [nn.Conv1d(c, width, 7, padding=3, stride=2 if k else 1), nn.BatchNorm1d(width),
                       nn.ReLU(inplace=True), nn.Dropout(dropout)]
            c = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.fc(self.body(x).mean(-1))

    def get_config(self) -> dict:
        return dict(kind=self.kind, n_chans=self.n_chans, n_outputs=self.n_outputs, n_times=self.n_times,
                    width=self.width, dropout=self.dropout)


def _check():  # pragma: no cover - quick manual check of the parameter count
    m = ResidualCNN(128, 40, 4, 24)
    print(count_params(m), m(torch.zeros(2, 128, 4, 24)).shape)
