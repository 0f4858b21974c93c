"""The field's own networks for small ERP datasets, from braindecode: EEGNet (Lawhern et al. 2018) and the shallow
ConvNet of Schirrmeister et al. 2017 (``ShallowFBCSPNet``).

braindecode builds and documents them; eegloop wraps each in a module that declares what it was built with
(``n_chans``, ``n_outputs``, ``n_times``, braindecode's own names) and returns it as :meth:`get_config`, so a
trained one is saved as safetensors and rebuilt from its JSON like eegloop's own networks (nothing executed on
loading). Both read the preprocessed time series (channels x times).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

__all__ = ["FieldNet", "EEGNetModel", "ShallowConvNet"]


def _braindecode():
    """braindecode's models module (its import draws montages and warns about MNE's; quiet here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from braindecode import models
    return models


class FieldNet(nn.Module):
    """A braindecode network with the configuration eegloop saves beside its weights."""

    kind = ""
    arch = ""

    def __init__(self, n_chans: int, n_outputs: int, n_times: int, **options):
        super().__init__()
        self.n_chans, self.n_outputs, self.n_times = int(n_chans), int(n_outputs), int(n_times)
        self.options = dict(options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.net = getattr(_braindecode(), self.arch)(n_chans=self.n_chans, n_outputs=self.n_outputs,
                                                          n_times=self.n_times, **self.options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def get_config(self) -> dict:
        return dict(kind=self.kind, n_chans=self.n_chans, n_outputs=self.n_outputs, n_times=self.n_times,
                    **self.options)


class EEGNetModel(FieldNet):
    """braindecode's ``EEGNet`` (EEGNet-8,2 by default): temporal, depthwise spatial and separable convolutions."""

    kind = "eegnet"
    arch = "EEGNet"

    def __init__(self, n_chans: int, n_outputs: int, n_times: int, kernel_length: int | None = None, **options):
        # braindecode's default temporal kernel (64 samples: a quarter second at 256 Hz) shrunk for short epochs
        kernel_length = kernel_length or max(4, min(64, n_times // 4))
        super().__init__(n_chans, n_outputs, n_times, kernel_length=kernel_length, **options)


class ShallowConvNet(FieldNet):
    """braindecode's ``ShallowFBCSPNet``: temporal then spatial convolution, squaring, mean pooling, log."""

    kind = "shallow_fbcsp"
    arch = "ShallowFBCSPNet"

    def __init__(self, n_chans: int, n_outputs: int, n_times: int, filter_time_length: int | None = None,
                 pool_time_length: int | None = None, pool_time_stride: int | None = None,
                 final_conv_length="auto", **options):
        # braindecode's defaults (25, 75 and 15 samples) need ~100 samples; shorter epochs get them scaled down
        filter_time_length = filter_time_length or max(3, min(25, n_times // 8))
        pool_time_length = pool_time_length or max(2, min(75, (n_times - filter_time_length) // 2))
        pool_time_stride = pool_time_stride or max(1, min(15, pool_time_length // 5))
        super().__init__(n_chans, n_outputs, n_times, filter_time_length=filter_time_length,
                         pool_time_length=pool_time_length, pool_time_stride=pool_time_stride,
                         final_conv_length=final_conv_length, **options)
