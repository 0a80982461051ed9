"""LARS, the batch-scaled learning rate and the warm-up + cosine schedule, by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray
from torch import nn

from finetuner_selfsup.fit import fit
from finetuner_selfsup.losses import NTXentLoss
from finetuner_selfsup.optim import (
    LARS,
    LargeBatchRecipe,
    lars_param_groups,
    scaled_learning_rate,
    self_supervised_default,
    warmup_cosine_factor,
)


def test_lars_step_matches_the_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.6, 0.8])  # |g| = 1
    opt = LARS([w], lr=0.1, momentum=0.0, weight_decay=0.0, trust_coefficient=0.01)
    opt.step()
    trust = 0.01 * 5 / 1
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * torch.tensor([0.6, 0.8]))


def test_lars_weight_decay_momentum_and_excluded_groups():
    w = nn.Parameter(torch.tensor([1.0, 0.0]))
    b = nn.Parameter(torch.tensor([2.0]))
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True}], lr=1.0, momentum=0.5,
               weight_decay=0.1, trust_coefficient=0.2)
    for step in range(2):
        w.grad = torch.tensor([0.0, 1.0])
        b.grad = torch.tensor([1.0])
        w_before = w.detach().clone()
        opt.step()
    # w, step 1: u = g + 0.1 w = (0.1, 1); trust = 0.2 * |w| / |u|
    w0 = torch.tensor([1.0, 0.0])
    u0 = torch.tensor([0.1, 1.0]) * (0.2 * 1.0 / math.sqrt(1.01))
    w1 = w0 - u0
    u1 = (torch.tensor([0.0, 1.0]) + 0.1 * w1)
    u1 = u1 * (0.2 * w1.norm() / u1.norm())
    w2 = w1 - (0.5 * u0 + u1)
    assert torch.allclose(w.detach(), w2, atol=1e-6)
    # b is excluded: plain momentum SGD without decay: 2 - 1 - (0.5 + 1)
    assert torch.allclose(b.detach(), torch.tensor([2.0 - 1.0 - 1.5]))


def test_biases_and_norm_parameters_are_excluded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2))
    adapted, excluded = lars_param_groups(model)
    assert {id(p) for p in adapted["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert excluded["lars_exclude"] is True and len(excluded["params"]) == 6


def test_learning_rate_scaling():
    assert scaled_learning_rate(0.3, 256, "linear") == pytest.approx(0.3)
    assert scaled_learning_rate(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scaled_learning_rate(0.1, 999, "none") == 0.1
    with pytest.raises(ValueError, match="'linear', 'sqrt', 'none'"):
        scaled_learning_rate(0.1, 8, "log")


def test_warmup_then_cosine():
    factors = [warmup_cosine_factor(s, 4, 12) for s in range(12)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert factors[8] == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_recipe_through_fit_scales_the_rate_and_follows_the_schedule():
    rng = np.random.default_rng(0)
    docs = DocumentArray(Document(tensor=rng.random((3, 8, 8), dtype=np.float32)) for _ in range(16))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    rates = []

    class RecordRate:
        def __getattr__(self, name):
            return lambda tuner, **kwargs: None

        def on_train_batch_begin(self, tuner):
            rates.append(tuner.state.learning_rates["group_0"])

    recipe = LargeBatchRecipe(base_lr=0.3, scaling="linear", warmup_epochs=1)
    jitter = lambda d: torch.as_tensor(d.tensor) + 0.05 * torch.randn(3, 8, 8)  # noqa: E731
    fit(model, docs, epochs=3, batch_size=8, loss=NTXentLoss(), preprocess_fn=jitter,
        configure_optimizer=recipe, callbacks=[RecordRate()], seed=0)
    peak = 0.3 * 4 / 256  # 8 views = 4 images per batch
    assert recipe.learning_rate == pytest.approx(peak)
    assert (recipe.warmup_steps, recipe.total_steps) == (4, 12)  # 16 images / 4 = 4 steps an epoch
    expected = [peak * warmup_cosine_factor(s, 4, 12) for s in range(12)]
    assert rates == pytest.approx(expected)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_counting_steps_for_a_recipe_leaves_the_batch_order_alone():
    """A configure_optimizer with plan() makes the engine count the steps of an epoch;
    the run must still see exactly the batches it would have seen."""
    rng = np.random.default_rng(1)
    docs = DocumentArray(Document(tensor=rng.random((3, 8, 8), dtype=np.float32)) for _ in range(12))
    jitter = lambda d: torch.as_tensor(d.tensor) + 0.05 * torch.randn(3, 8, 8)  # noqa: E731

    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=1e-2)

    class AdamWithPlan:
        planned = None

        def __call__(self, model):
            return adam(model)

        def plan(self, **kwargs):
            self.planned = kwargs

    results = []
    for configure in (adam, AdamWithPlan()):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
        fit(model, docs, epochs=2, batch_size=8, loss=NTXentLoss(), preprocess_fn=jitter,
            configure_optimizer=configure, seed=4)
        results.append([p.detach().clone() for p in model.parameters()])
    assert configure.planned == {"images_per_batch": 4, "steps_per_epoch": 3, "epochs": 2}
    assert all(torch.equal(a, b) for a, b in zip(*results))


class _RecordOptimiser:
    """Records the optimiser's class and the learning rate of every batch."""

    def __init__(self):
        self.rates, self.kind, self.weight_decay = [], None, None

    def __getattr__(self, name):
        return lambda tuner, **kwargs: None

    def on_train_batch_begin(self, tuner):
        self.rates.append(tuner.state.learning_rates["group_0"])
        self.kind = type(tuner._optimizer).__name__
        self.weight_decay = tuner._optimizer.param_groups[0]["weight_decay"]
        self.fused = tuner._optimizer.defaults.get("fused")


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))


def _unlabelled(n=16):
    rng = np.random.default_rng(0)
    return DocumentArray(Document(tensor=rng.random((3, 8, 8), dtype=np.float32)) for _ in range(n))


_JITTER = lambda d: torch.as_tensor(d.tensor) + 0.05 * torch.randn(3, 8, 8)  # noqa: E731


def test_self_supervised_fit_without_an_optimiser_gets_adamw_with_warmup_and_cosine():
    record = _RecordOptimiser()
    fit(_tiny_model(), _unlabelled(), epochs=10, batch_size=8, loss=NTXentLoss(),
        preprocess_fn=_JITTER, callbacks=[record], seed=0)
    assert record.kind == "AdamW" and record.weight_decay == 1e-4
    assert not record.fused  # fused only on the GPU: CPU updates stay as recorded
    # 4 steps an epoch, one warm-up epoch (a tenth of 10), cosine to 0 over the rest
    expected = [1e-3 * warmup_cosine_factor(s, 4, 40) for s in range(40)]
    assert record.rates == pytest.approx(expected)
    assert self_supervised_default(3).warmup_epochs == 1 and self_supervised_default(50).warmup_epochs == 5


def test_a_named_learning_rate_keeps_finetuners_constant_adam():
    record = _RecordOptimiser()
    fit(_tiny_model(), _unlabelled(), epochs=2, batch_size=8, loss=NTXentLoss(),
        preprocess_fn=_JITTER, callbacks=[record], seed=0, learning_rate=1e-3)
    assert record.kind == "Adam" and record.rates == [1e-3] * 8


def test_supervised_fit_without_an_optimiser_keeps_adam():
    rng = np.random.default_rng(0)
    docs = DocumentArray(
        Document(tensor=rng.random((3, 8, 8), dtype=np.float32), tags={"finetuner_label": str(i % 4)})
        for i in range(16)
    )
    record = _RecordOptimiser()
    fit(_tiny_model(), docs, epochs=1, batch_size=8, loss="TripletLoss", num_items_per_class=2,
        callbacks=[record], seed=0)
    assert record.kind == "Adam" and set(record.rates) == {1e-3}


def test_recipe_with_an_epoch_scheduler_step_is_an_error():
    """The recipe plans warm-up and decay in batches; stepped once per epoch the rate would
    never leave the warm-up (4 epochs of 4 steps: 0.0125 .. 0.05 instead of reaching 0.1)."""
    recipe = LargeBatchRecipe(base_lr=0.1, scaling="none", warmup_epochs=1, optimizer="sgd")
    with pytest.raises(ValueError, match=r"configure_optimizer=LargeBatchRecipe.*scheduler_step='epoch'.*scheduler_step='batch'"):
        fit(_tiny_model(), _unlabelled(), epochs=4, batch_size=4, loss=NTXentLoss(),
            preprocess_fn=_JITTER, configure_optimizer=recipe, scheduler_step="epoch")
