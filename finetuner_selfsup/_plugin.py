"""What activation changes on the ``finetuner`` package itself, once it has executed."""
from __future__ import annotations

from types import ModuleType


def patch_finetuner(finetuner: ModuleType) -> None:
    """Route ``finetuner.fit`` and ``finetuner.display`` to this package (idempotent).

    Only light modules are imported here: ``import finetuner`` must stay as cheap as it
    is without the plugin (torch is imported on the first ``fit``).
    """
    from . import fit as fit_module
    from . import tailoring_api

    finetuner.fit = fit_module.fit
    finetuner.display = tailoring_api.display
    finetuner.__finetuner_selfsup__ = True
