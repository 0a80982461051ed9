"""What activation changes on the ``finetuner`` package itself, once it has executed."""
from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any, Callable


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


def _is_torch_model(model: Any) -> bool:
    """Whether ``model`` is a PyTorch module, without importing torch (a program that has
    not imported torch cannot hold one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _for_torch_models(ours: Callable[..., Any], upstream: Callable[..., Any]) -> Callable[..., Any]:
    """``ours`` for PyTorch models, ``upstream`` for the other frameworks (Keras, Paddle)."""

    @functools.wraps(ours)
    def route(model: Any, *args: Any, **kwargs: Any) -> Any:
        return (ours if _is_torch_model(model) else upstream)(model, *args, **kwargs)

    route.__finetuner_selfsup__ = True  # type: ignore[attr-defined]
    return route


def patch_tailor(tailor: ModuleType) -> None:
    """Route ``finetuner.tailor.to_embedding_model`` and ``finetuner.tailor.display`` to this
    package's tailor for PyTorch models (idempotent).

    ``ft.fit(to_embedding_model=True, ...)`` already used it; calling the tailor directly
    still reached upstream's, which crashes when cutting a model with a projection head
    (the tutorial's first fit returns one) and freezes unrelated tensors for
    ``freeze=[names]``.
    """
    from . import tailoring_api

    for name in ("to_embedding_model", "display"):
        current = getattr(tailor, name)
        if not getattr(current, "__finetuner_selfsup__", False):
            setattr(tailor, name, _for_torch_models(getattr(tailoring_api, name), current))
