"""Freed host memory kept for reuse on CPU training runs (engine.host_memory)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

import pytest

from finetuner_selfsup.engine import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: a training-like step (a 32 MB batch, smaller intermediates, an output; all freed at
#: its end) run 5 times to settle, then the page faults of each of 10 more steps
_FAULTS = r"""
import json, resource, sys
import torch
from finetuner_selfsup.engine.host_memory import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "tuned" else False
def step():
    views = torch.empty(8 * 1024 * 1024)
    views.fill_(1.0)
    for _ in range(4):
        part = torch.empty(2 * 1024 * 1024)
        part.fill_(2.0)
        views[: part.numel()] += part
    return float((views * 2)[0])
for _ in range(5):
    step()
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str, **env: str) -> dict:
    """``applied`` and the minor page faults of each of 10 settled steps (``faults``), and
    their median (``typical``): a step in steady state. The median, not the mean, because
    the heap may still grow once after the warm-up (one step then maps the 32 MB afresh,
    8192 faults; seen once on a fresh CI machine), which says nothing about reuse."""
    environment = {**os.environ, "FINETUNER_SELFSUP_DISABLE": "1", **env}
    result = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=environment,
        check=True, timeout=120,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {**measured, "typical": statistics.median(measured["faults"])}


@pytest.mark.skipif(not GLIBC, reason="the setting exists on Linux with glibc only")
def test_freed_buffers_are_reused_instead_of_paged_in_again_every_step():
    plain = _faults("plain")
    tuned = _faults("tuned")
    assert plain["applied"] is False and tuned["applied"] is True
    assert plain["typical"] > 8_000  # the step's 64 MB and more as fresh 4 KB pages, every step
    assert tuned["typical"] < 500  # the same memory again, already mapped
    assert sum(tuned["faults"]) < sum(plain["faults"]) / 4  # and over all ten steps too


@pytest.mark.skipif(not GLIBC, reason="the setting exists on Linux with glibc only")
@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_the_environment_switch_leaves_malloc_alone(value):
    result = _faults("tuned", FINETUNER_SELFSUP_MALLOC_TUNING=value)
    assert result["applied"] is False and result["typical"] > 8_000


class _FakeLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls = []
        self.answer = answer

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_thresholds_are_set_once_per_process(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied_in_pid", None)
    monkeypatch.delenv(host_memory.ENV_SWITCH, raising=False)
    libc = _FakeLibc()
    assert host_memory.keep_freed_host_memory(libc) is True
    assert libc.calls == [(-3, 1 << 30), (-1, 2**31 - 1)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert host_memory.keep_freed_host_memory(libc) is True
    assert len(libc.calls) == 2  # not again in this process


def test_a_refused_setting_is_reported_as_not_in_effect(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied_in_pid", None)
    monkeypatch.delenv(host_memory.ENV_SWITCH, raising=False)
    assert host_memory.keep_freed_host_memory(_FakeLibc(answer=0)) is False
    assert host_memory._applied_in_pid is None


def test_a_cpu_fit_applies_the_setting_before_training(monkeypatch):
    """``ft.fit`` on the CPU applies the setting (unless switched off) before training."""
    import torch
    from docarray import Document, DocumentArray
    from torch import nn

    from finetuner_selfsup.fit import fit

    calls = []
    monkeypatch.setattr("finetuner_selfsup.engine.tuner.keep_freed_host_memory", lambda: calls.append(1))
    docs = DocumentArray(
        Document(tensor=torch.rand(3, 8, 8).numpy(), tags={"finetuner_label": i // 2}) for i in range(8)
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    fit(model, docs, epochs=1, batch_size=4, num_items_per_class=2, loss="TripletLoss")
    assert calls == [1]
