"""The hue shift compiled with torch.compile for single CPU views (augment.compiled)."""
from __future__ import annotations

import logging
import os
import sys

import pytest
import torch


from torch_settings import seed_and_one_thread  # noqa: E402,F401  (autouse fixture)

from finetuner_selfsup.augment import batched as B  # noqa: E402
from finetuner_selfsup.augment.compiled import ENV_SWITCH, CompiledKernel, compiling_enabled  # noqa: E402


def _views(n: int, size: int = 160) -> torch.Tensor:
    views = torch.rand(n, 3, size, size)
    views[:, :, :4] = 0.5  # grey rows: spread 0
    views[:, 0, 4:8] = 1.0  # red at the top of its range
    return views


def test_compiled_hue_equals_the_eager_hue_for_every_factor(monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    kernel = CompiledKernel(B._shift_hue, "hue")
    view = _views(1)
    tents = B._hue_tents(view.device, view.dtype)
    for factor in (-0.5, -0.2, 0.0, 0.13, 0.5):
        compiled = kernel(view, torch.tensor(factor), *tents)
        torch.testing.assert_close(compiled, B._hue(view, factor), rtol=0, atol=1e-5)
    assert not kernel.failed


def test_view_by_view_jitter_runs_the_compiled_hue_and_gives_the_eager_views(monkeypatch):
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    calls = []
    original = B._compiled_hue.__call__
    monkeypatch.setattr(B, "_compiled_hue", lambda *args: calls.append(1) or original(*args))
    n = 6
    views = _views(n)
    apply = torch.tensor([True, True, False, True, True, True])
    factors = torch.tensor([[1.2, 0.8, 1.1, 0.1], [0.7, 1.3, 0.6, -0.3], [1, 1, 1, 0.2],
                            [1.0, 1.0, 1.0, 0.5], [1.5, 0.6, 1.4, -0.5], [0.9, 1.1, 0.0, 0.05]])
    order = torch.stack([torch.randperm(4) for _ in range(n)])
    fused = B._color_jitter_view_by_view(views.clone(), apply, factors, order)
    assert len(calls) == int(apply.sum())  # the hue of every jittered view, compiled
    monkeypatch.setenv(ENV_SWITCH, "0")
    eager = B._color_jitter_view_by_view(views.clone(), apply, factors, order)
    torch.testing.assert_close(fused, eager, rtol=0, atol=1e-5)
    assert torch.equal(fused[2], views[2])  # not jittered


def test_small_views_keep_the_eager_hue(monkeypatch):
    """Below COMPILED_HUE_MIN_PIXELS (e.g. the demo's 64 px) nothing is compiled: the views
    are exactly the eager ones, so results at small sizes do not depend on a compiler."""
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    calls = []
    monkeypatch.setattr(B, "_compiled_hue", lambda *args: calls.append(1))
    views = _views(2, size=64)
    apply = torch.tensor([True, True])
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.3], [1.2, 0.9, 1.1, -0.2]])
    order = torch.tensor([[3, 0, 1, 2], [0, 1, 2, 3]])
    jittered = B._color_jitter_view_by_view(views.clone(), apply, factors, order)
    assert calls == []
    view = views[0:1]
    brightness, contrast, saturation, hue = factors[0].tolist()  # float32 values, as the path sees them
    for op, factor in ((B._hue, hue), (B._brightness, brightness), (B._contrast, contrast), (B._saturation, saturation)):
        view = op(view, factor)
    assert torch.equal(jittered[0], view[0])  # the eager operations, bit for bit


def test_a_kernel_that_cannot_be_compiled_warns_once_and_runs_eager(monkeypatch, caplog):
    monkeypatch.delenv(ENV_SWITCH, raising=False)

    def no_compiler(function, **options):
        def broken(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return broken

    monkeypatch.setattr(torch, "compile", no_compiler)
    kernel = CompiledKernel(lambda x: x * 2, "doubling")
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        first = kernel(torch.ones(2))
        second = kernel(torch.ones(2))
    assert torch.equal(first, torch.full((2,), 2.0)) and torch.equal(second, first)
    assert kernel.failed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "doubling" in warnings[0] and "No working C++ compiler found" in warnings[0]
    assert "more detail" not in warnings[0] and ENV_SWITCH in warnings[0]


@pytest.mark.parametrize("value, enabled", [("", True), ("1", True), ("0", False), ("off", False), ("False", False)])
def test_the_environment_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(ENV_SWITCH, value)
    assert compiling_enabled() is enabled
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda function, **options: compiled.append(1) or function)
    kernel = CompiledKernel(lambda x: x + 1, "plus-one")
    assert torch.equal(kernel(torch.zeros(1)), torch.ones(1))
    assert compiled == ([1] if enabled else [])
