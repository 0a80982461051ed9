"""Device names -> ``torch.device``, with an early, readable error when the device is absent.

Finetuner 0.4.1 passed the user's string straight to ``torch.device``; asking for ``'cuda'``
on a machine without a GPU then failed much later, deep inside a forward pass. The tailor and
the training engine both resolve their ``device`` argument here so that the failure happens
at once and says what to pass instead.
"""
from __future__ import annotations

from typing import Union

import torch

DeviceLike = Union[str, torch.device, None]


def _parse(name: DeviceLike) -> torch.device:
    """Turn ``'cpu'``, ``'cuda'``, ``'cuda:1'`` or a ``torch.device`` into a ``torch.device``."""
    if name is None:
        return torch.device("cpu")
    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {name!r}")
    try:
        return torch.device(name.strip().lower())
    except RuntimeError as err:
        raise ValueError(
            f"Unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:<index>'"
        ) from err


def _check_cuda(device: torch.device) -> None:
    """Raise if a CUDA device is requested that this machine does not have."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but CUDA is not available on this "
            f"machine; pass device='cpu'"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise RuntimeError(
            f"device={str(device)!r} was requested but this machine has {count} CUDA "
            f"device(s) (indices 0..{count - 1})"
        )


def _check_mps(device: torch.device) -> None:
    """Raise if Apple's MPS backend is requested but not usable here."""
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but MPS is not available on this "
            f"machine; pass device='cpu'"
        )


def resolve_device(name: DeviceLike = "cpu") -> torch.device:
    """Parse a device name like upstream does and check that the device exists.

    :param name: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``, a ``torch.device`` or ``None``
        (meaning CPU).
    :return: the ``torch.device``.
    :raises RuntimeError: the device type is valid but not available on this machine.
    :raises ValueError: the name is not a device name.
    """
    device = _parse(name)
    if device.type == "cuda":
        _check_cuda(device)
    elif device.type == "mps":
        _check_mps(device)
    return device
