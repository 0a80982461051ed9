"""Colour kernels fused by ``torch.compile`` on the CPU, with the eager function as fallback.

Why: on the CPU a 224 px view's hue shift is some 25 elementwise passes in eager mode
(max, min, the sector choice, the wrap-around, three tents); one fused loop does the same
arithmetic in a single pass over the image, about 6x faster on the project's machine
(315 -> 54 us a view) -- the largest single cost of the CPU input pipeline.

:class:`CompiledKernel` compiles its function on first use (a C++ compiler is needed:
Inductor writes and builds a small C++ file, cached on disk, so later processes load it
in a second or two). If compiling or running the compiled code fails -- no compiler, an
unsupported platform -- it says so once in a warning and runs the eager function from
then on: the same numbers (to float32 rounding), only slower. ``FINETUNER_SELFSUP_COMPILE=0``
switches compiling off. Only fixed shapes are compiled (``dynamic=False``): the kernels
are used for single views of one size, where one compilation serves the whole run.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from ..switches import switched_off

logger = logging.getLogger("finetuner_selfsup")

#: environment switch: ``0`` / ``false`` / ``no`` / ``off`` runs the eager kernels
ENV_SWITCH = "FINETUNER_SELFSUP_COMPILE"


def compiling_enabled() -> bool:
    """False when :data:`ENV_SWITCH` says no (read on every call, so tests and users can
    change it within a process)."""
    return not switched_off(ENV_SWITCH)


class CompiledKernel:
    """``function`` compiled with ``torch.compile`` on first call, eager if that fails.

    Calls must pass tensors (a Python float would be compiled in as a constant and
    recompile for every value).
    """

    def __init__(self, function: Callable[..., torch.Tensor], name: str) -> None:
        self.function = function
        self.name = name
        self._compiled: Optional[Callable[..., torch.Tensor]] = None
        self._failed = False

    @property
    def failed(self) -> bool:
        """Whether compiling failed in this process (the eager function runs instead)."""
        return self._failed

    def __call__(self, *args: Any) -> torch.Tensor:
        if self._failed or not compiling_enabled():
            return self.function(*args)
        if self._compiled is None:  # torch.compile only wraps; the build happens at the first call
            logger.info("compiling the CPU %s kernel with torch.compile (once; cached on disk)", self.name)
            self._compiled = torch.compile(self.function, dynamic=False, fullgraph=True)
        try:
            return self._compiled(*args)
        except Exception as error:  # noqa: BLE001 -- any compiler failure means "use eager"
            self._failed = True
            logger.warning(
                "torch.compile could not build the CPU %s kernel (%s: %s); using the eager "
                "version, which gives the same views more slowly. Install a C++ compiler "
                "(e.g. gcc) to get the fast one, or set %s=0 to skip the attempt.",
                self.name, type(error).__name__, str(error).splitlines()[0] if str(error) else "",
                ENV_SWITCH,
            )
            return self.function(*args)
