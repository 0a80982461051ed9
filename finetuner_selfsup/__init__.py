"""finetuner-selfsup: SimCLR pre-training and few-label fine-tuning for Finetuner 0.4.

Importing this package activates the plugin (the ``.pth`` file installed with it does so
at interpreter start-up unless ``FINETUNER_SELFSUP_DISABLE=1``). Activation is cheap: it
only registers an import hook (see :mod:`finetuner_selfsup._bootstrap`); torch, docarray
and the training engine are imported when ``finetuner``/``docarray`` are, or on first use.
"""
from __future__ import annotations

from . import _bootstrap

__version__ = "0.1.0"

__all__ = ["__version__", "activate", "fit", "is_active"]

activate = _bootstrap.install
is_active = _bootstrap.is_installed

activate()


def __getattr__(name: str) -> "object":
    # Lazy, so that ``import finetuner_selfsup`` (and interpreter start-up) stays light.
    if name == "fit":
        from .fit import fit

        return fit
    raise AttributeError(f"module 'finetuner_selfsup' has no attribute {name!r}")
