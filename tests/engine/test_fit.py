"""``ft.fit`` on small models: the three kinds of training, its arguments, its errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray
from torch import nn

from finetuner_selfsup.engine.collate import Collate
from finetuner_selfsup.engine.data_kinds import DataKind
from finetuner_selfsup.engine.datasets import TwoViewDataset
from finetuner_selfsup.engine.samplers import ClassBatchSampler, InstanceBatchSampler, SessionBatchSampler
from finetuner_selfsup.fit import fit
from finetuner_selfsup.heads import EmbeddingModelWithHead, ProjectionHead
from finetuner_selfsup.losses import NTXentLoss, TripletLoss
from finetuner_selfsup.miners import TripletEasyHardMiner

SIZE = 16


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)
    )


def jitter_view(doc: Document) -> torch.Tensor:
    """A random 'augmentation' (picklable, for DataLoader workers)."""
    x = torch.as_tensor(doc.tensor, dtype=torch.float32)
    return x + 0.1 * torch.randn_like(x)


def unlabelled(n: int, seed: int = 0) -> DocumentArray:
    rng = np.random.default_rng(seed)
    return DocumentArray(Document(tensor=rng.random((3, SIZE, SIZE), dtype=np.float32)) for _ in range(n))


def labelled(num_classes: int, per_class: int = 2, seed: int = 0) -> DocumentArray:
    rng = np.random.default_rng(seed)
    docs = DocumentArray()
    for c in range(num_classes):
        centre = rng.random((3, SIZE, SIZE), dtype=np.float32)
        for _ in range(per_class):
            noisy = (centre + 0.05 * rng.standard_normal(centre.shape)).astype(np.float32)
            docs.append(Document(tensor=noisy, tags={"finetuner_label": f"class-{c}"}))
    return docs


def params_of(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class LossLog:
    """A user callback in Finetuner 0.4.1's style (duck-typed, only some hooks)."""

    def __init__(self):
        self.train, self.epochs, self.val = [], [], []

    def __getattr__(self, name):
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_train_batch_end(self, tuner):
        self.train.append(tuner.state.current_loss)

    def on_val_batch_end(self, tuner):
        self.val.append(tuner.state.current_loss)

    def on_epoch_end(self, tuner):
        self.epochs.append(tuner.state.epoch)


# -- self-supervised -------------------------------------------------------------------
def test_self_supervised_fit_trains_model_and_head():
    log = LossLog()
    head = ProjectionHead(in_features=8, output_dim=4)
    model = fit(
        tiny_cnn(), unlabelled(12), epochs=2, batch_size=8, loss=NTXentLoss(temperature=0.5),
        preprocess_fn=jitter_view, to_embedding_model=True, input_size=(3, SIZE, SIZE),
        layer_name="flatten_4", projection_head=head, callbacks=[log],
    )
    assert isinstance(model, EmbeddingModelWithHead)
    assert model.projection_head is head
    # 12 images, 4 per batch -> 3 batches per epoch, 2 epochs
    assert len(log.train) == 6 and log.epochs == [0, 1]
    assert all(math.isfinite(v) for v in log.train)
    before = params_of(head)
    model.eval()
    assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 4)
    assert model.embed_model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 8)
    assert params_of(head).keys() == before.keys()


def test_two_views_are_independent_draws_and_paired_by_label():
    docs = unlabelled(3)
    dataset = TwoViewDataset(docs, jitter_view)
    items = [dataset[i] for i in range(3)]
    batch = Collate(DataKind.INSTANCE, ["a", "b", "c"])(items)
    assert batch.inputs.shape == (6, 3, SIZE, SIZE)
    assert batch.labels.tolist() == [0, 1, 2, 0, 1, 2]
    # view 1 and view 2 of the same image differ (independent draws) but stay close
    assert not torch.equal(batch.inputs[0], batch.inputs[3])
    assert (batch.inputs[0] - batch.inputs[3]).abs().mean() < 0.5
    # the document was not modified
    assert docs[0].tensor.dtype == np.float32 and isinstance(docs[0].tensor, np.ndarray)


def test_odd_self_supervised_batch_is_an_error():
    with pytest.raises(ValueError, match="must be even"):
        fit(tiny_cnn(), unlabelled(8), epochs=1, batch_size=7, loss=NTXentLoss(), preprocess_fn=jitter_view)


def test_self_supervised_without_augmentation_is_an_error():
    with pytest.raises(ValueError, match="preprocess_fn"):
        fit(tiny_cnn(), unlabelled(8), epochs=1, batch_size=8, loss=NTXentLoss())


def test_instance_sampler_uses_every_image_once_per_epoch():
    sampler = InstanceBatchSampler(num_items=9, images_per_batch=4, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(9))
        # 9 = 4 + 4 + 1: the lone image joins the previous batch (it would have no negative)
        assert sorted(len(b) for b in batches) == [4, 5]


# -- supervised ------------------------------------------------------------------------
def test_labelled_fit_with_triplet_hard_mining_changes_weights():
    log = LossLog()
    model = tiny_cnn()
    before = params_of(model)
    fit(
        model, labelled(6), epochs=2, batch_size=4, num_items_per_class=2,
        loss=TripletLoss(miner=TripletEasyHardMiner(neg_strategy="hard"), margin=0.3),
        learning_rate=1e-2, callbacks=[log],
    )
    assert len(log.train) == 2 * 3  # 6 classes, 2 per batch
    assert all(math.isfinite(v) for v in log.train)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_class_sampler_batches_hold_k_items_of_distinct_classes():
    labels = [c for c in range(7) for _ in range(3)]  # 7 classes x 3 items
    sampler = ClassBatchSampler(labels, batch_size=6, num_items_per_class=2, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    used = set()
    for batch in batches:
        classes = [labels[i] for i in batch]
        counts = {c: classes.count(c) for c in set(classes)}
        assert all(v == 2 for v in counts.values()) and len(counts) >= 2
        used.update(batch)
    assert used == set(range(21))  # every item is used in the epoch


def test_labelled_batch_that_cannot_be_filled_is_an_error_not_zero_steps():
    with pytest.raises(ValueError, match=r"3 classes.*needs 64 distinct classes"):
        fit(tiny_cnn(), labelled(3), epochs=1, batch_size=128, num_items_per_class=2, loss="TripletLoss")


def test_mixed_labelled_and_unlabelled_documents_are_named():
    docs = labelled(2)
    stray = Document(tensor=np.zeros((3, SIZE, SIZE), np.float32), id="no-label-here")
    docs.append(stray)
    with pytest.raises(ValueError, match="no-label-here"):
        fit(tiny_cnn(), docs, epochs=1, batch_size=4, loss="TripletLoss")


def test_inputs_of_different_shapes_name_the_documents():
    docs = labelled(2)
    docs.append(Document(tensor=np.zeros((3, 9, 9), np.float32), tags={"finetuner_label": "class-0"}, id="small-one"))
    with pytest.raises(ValueError, match=r"small-one.*\(3, 9, 9\)"):
        fit(tiny_cnn(), docs, epochs=1, batch_size=6, num_items_per_class=3, loss="TripletLoss")


def test_empty_training_data_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        fit(tiny_cnn(), DocumentArray(), epochs=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        fit(tiny_cnn(), labelled(4), device="cuda", loss="TripletLoss", batch_size=4)


def test_non_finite_loss_stops_with_the_step():
    docs = labelled(4)
    docs[0].tensor = np.full((3, SIZE, SIZE), np.nan, np.float32)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch \d"):
        fit(tiny_cnn(), docs, epochs=1, batch_size=8, num_items_per_class=2, loss="TripletLoss")


def test_non_finite_loss_names_the_batch_documents_and_the_one_with_nan_inputs():
    docs = labelled(4)
    docs[5].tensor = np.full((3, SIZE, SIZE), np.nan, np.float32)
    with pytest.raises(FloatingPointError) as error:
        fit(tiny_cnn(), docs, epochs=1, batch_size=4, num_items_per_class=2, loss="TripletLoss", seed=0)
    message = str(error.value)
    assert docs[5].id in message.split("(documents: ")[1].split("). ")[0]  # among the batch's documents
    assert f"The inputs of Document(id={docs[5].id!r}) hold NaN/inf values" in message
    assert sum(doc.id in message for doc in docs) == 4  # the batch's four documents, no others


def test_batch_documents_name_each_document_once_and_count_the_rest():
    from finetuner_selfsup.engine.messages import batch_documents, non_finite_items

    dataset = TwoViewDataset(unlabelled(8), jitter_view)
    named = batch_documents(dataset, [0, 1, 0, 1])  # two images, two views each
    assert named == f"Document(id={dataset.docs[0].id!r}), Document(id={dataset.docs[1].id!r})"
    assert batch_documents(dataset, list(range(8)), limit=2).endswith(" and 6 more")
    inputs = torch.zeros(4, 3)
    inputs[2, 1] = float("inf")
    assert non_finite_items(inputs, [5, 6, 7, 8]) == [7]
    assert non_finite_items({"x": inputs}, [5, 6, 7, 8]) == []


def test_projection_head_without_tailoring_is_not_silently_ignored():
    with pytest.raises(ValueError, match="to_embedding_model=True"):
        fit(tiny_cnn(), labelled(4), batch_size=4, loss="TripletLoss", projection_head=ProjectionHead(6, 4))


# -- arguments ---------------------------------------------------------------------------
def test_freeze_by_name_freezes_exactly_those_layers_during_fit():
    model = fit(
        tiny_cnn(), labelled(4), epochs=1, batch_size=4, num_items_per_class=2, loss="TripletLoss",
        learning_rate=1e-2, to_embedding_model=True, input_size=(3, SIZE, SIZE), freeze=["conv2d_1"],
    )
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"0.weight", "0.bias"}
    reference = tiny_cnn()
    assert torch.equal(model[0].weight, reference[0].weight)
    assert not torch.equal(model[4].weight, reference[4].weight)


def test_configure_optimizer_and_epoch_scheduler():
    def configure(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    rates = []

    class RateLog(LossLog):
        def on_train_epoch_begin(self, tuner):
            rates.append(tuner._optimizer.param_groups[0]["lr"])

    fit(tiny_cnn(), labelled(4), epochs=3, batch_size=4, loss="SiameseLoss",
        configure_optimizer=configure, scheduler_step="epoch", callbacks=[RateLog()])
    assert rates == pytest.approx([0.1, 0.05, 0.025])


def test_eval_data_and_upstream_early_stopping(tmp_path):
    from finetuner.tuner.callback import BestModelCheckpoint, EarlyStopping, TrainingCheckpoint

    log = LossLog()
    callbacks = [
        log,
        EarlyStopping(monitor="val_loss", patience=1, min_delta=1e9),  # never "improves" enough
        BestModelCheckpoint(save_dir=str(tmp_path / "best")),
        TrainingCheckpoint(save_dir=str(tmp_path / "ckpt")),
    ]
    (tmp_path / "best").mkdir()
    (tmp_path / "ckpt").mkdir()
    fit(tiny_cnn(), labelled(4), eval_data=labelled(4, seed=1), epochs=10, batch_size=4,
        loss="TripletLoss", callbacks=callbacks)
    assert log.val and all(math.isfinite(v) for v in log.val)
    assert log.epochs == [0, 1]  # stopped by EarlyStopping after patience ran out
    assert (tmp_path / "best" / "best_model_val_loss").exists()
    assert (tmp_path / "ckpt" / "saved_model_epoch_02").exists()


def test_errors_in_batching_eval_data_say_it_is_eval_data():
    """train_data batches fine with these settings; the error must point at eval_data."""
    with pytest.raises(ValueError, match=r"^eval_data: the labelled data has 3 classes"):
        fit(tiny_cnn(), labelled(8), eval_data=labelled(3, seed=1), epochs=1, batch_size=8,
            num_items_per_class=2, loss="TripletLoss")
    with pytest.raises(ValueError, match=r"^eval_data: self-supervised training needs at least 2 images"):
        fit(tiny_cnn(), unlabelled(4), eval_data=unlabelled(1, seed=1), epochs=1, batch_size=4,
            loss=NTXentLoss(), preprocess_fn=jitter_view)
    odd = unlabelled(4, seed=1)
    odd[2].tensor = np.zeros((3, SIZE + 2, SIZE), np.float32)
    with pytest.raises(ValueError, match=r"^eval_data: inputs of one batch must have the same shape"):
        fit(tiny_cnn(), unlabelled(4), eval_data=odd, epochs=1, batch_size=8, loss=NTXentLoss(),
            preprocess_fn=jitter_view)


def test_seed_makes_cpu_runs_identical():
    runs = []
    for _ in range(2):
        model = fit(tiny_cnn(), unlabelled(8), epochs=2, batch_size=4, loss=NTXentLoss(),
                    preprocess_fn=jitter_view, seed=123)
        runs.append(params_of(model))
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_data_loader_workers():
    log = LossLog()
    fit(tiny_cnn(), unlabelled(8), epochs=2, batch_size=4, loss=NTXentLoss(), preprocess_fn=jitter_view,
        num_workers=2, callbacks=[log])
    assert len(log.train) == 8


def test_user_collate_fn_receives_contents():
    seen = []

    def collate(contents):
        seen.append(len(contents))
        return torch.stack([torch.as_tensor(c) for c in contents])

    fit(tiny_cnn(), labelled(4), epochs=1, batch_size=4, loss="TripletLoss", collate_fn=collate)
    assert seen == [4, 4]


def test_session_data_trains():
    rng = np.random.default_rng(0)
    docs = DocumentArray()
    for _ in range(4):
        root = Document(tensor=rng.random((3, SIZE, SIZE), dtype=np.float32))
        for tag in (1, -1, -1):
            root.matches.append(Document(tensor=rng.random((3, SIZE, SIZE), dtype=np.float32), tags={"finetuner_label": tag}))
        docs.append(root)
    log = LossLog()
    fit(tiny_cnn(), docs, epochs=1, batch_size=8, loss="TripletLoss", callbacks=[log])
    assert len(log.train) == 2 and all(math.isfinite(v) for v in log.train)


def _session_docs(*sessions) -> DocumentArray:
    """One root per ``(positives, negatives)``, with that many matches tagged +1 / -1."""
    rng = np.random.default_rng(0)
    docs = DocumentArray()
    for positives, negatives in sessions:
        root = Document(tensor=rng.random((3, SIZE, SIZE), dtype=np.float32))
        for tag in [1] * positives + [-1] * negatives:
            root.matches.append(Document(tensor=rng.random((3, SIZE, SIZE), dtype=np.float32), tags={"finetuner_label": tag}))
        docs.append(root)
    return docs


def test_a_session_cut_across_batches_keeps_a_positive_and_a_negative_in_each():
    """A session larger than a batch is cut; a random cut could leave a batch of its root
    with only negatives, in which a triplet miner finds nothing (fit then stopped)."""
    labels = [(0, 0), (0, 1)] + [(0, -1)] * 4 + [(1, 0), (1, 1), (1, -1)]  # 1+5 > batch_size 4
    for seed in range(20):
        sampler = SessionBatchSampler(labels, batch_size=4, generator=torch.Generator().manual_seed(seed))
        plan = list(sampler)
        assert set(sum(plan, [])) == set(range(len(labels)))  # every item used
        for batch in plan:
            assert len(batch) <= 4
            for session in {labels[i][0] for i in batch}:
                types = {labels[i][1] for i in batch if labels[i][0] == session}
                assert types == {0, 1, -1}, (seed, plan)
        again = list(SessionBatchSampler(labels, batch_size=4, generator=torch.Generator().manual_seed(seed)))
        assert again == plan  # deterministic per seed
    log = LossLog()
    for seed in range(3):
        fit(tiny_cnn(), _session_docs((1, 4), (1, 1), (1, 1)), epochs=1, batch_size=4, loss="TripletLoss",
            seed=seed, callbacks=[log])
    assert log.train and all(math.isfinite(v) for v in log.train)


def test_fewer_images_than_one_batch_trains_one_smaller_batch():
    log = LossLog()
    fit(tiny_cnn(), unlabelled(3), epochs=2, batch_size=512, loss=NTXentLoss(), preprocess_fn=jitter_view,
        callbacks=[log])
    assert len(log.train) == 2 and all(math.isfinite(v) for v in log.train)


def test_upstream_embed_takes_the_plugins_preprocessed_tensors():
    """Upstream ft.embed collated with torch.tensor(list), which refuses the torch tensors
    this package's vision_preprocessor returns; its default now stacks them."""
    import finetuner as ft
    from finetuner.tuner.augmentation import vision_preprocessor

    docs = DocumentArray(Document(tensor=(255 * d.tensor).astype(np.uint8).transpose(1, 2, 0))
                         for d in unlabelled(5))
    model = tiny_cnn().eval()
    pre = vision_preprocessor(SIZE, SIZE, phase="validation")
    ft.embed(docs, model, batch_size=2, preprocess_fn=pre)
    with torch.inference_mode():
        expected = model(torch.stack([pre(d) for d in docs])).numpy()
    np.testing.assert_allclose(docs.embeddings, expected, rtol=1e-5, atol=1e-6)
    # numpy contents (no preprocess_fn) and a caller's collate_fn still work as upstream
    plain = unlabelled(3)
    ft.embed(plain, model)
    with torch.inference_mode():
        np.testing.assert_allclose(plain.embeddings, model(torch.from_numpy(plain.tensors)).numpy(), rtol=1e-5, atol=1e-6)
    calls = []
    ft.embed(plain, model, collate_fn=lambda x: calls.append(len(x)) or torch.as_tensor(np.stack(x)))
    assert calls == [3]


def test_upstream_evaluation_callback_with_the_plugins_preprocessor():
    from finetuner.tuner.augmentation import vision_preprocessor
    from finetuner.tuner.callback import EvaluationCallback

    seen = []

    class Metrics(LossLog):
        def on_epoch_end(self, tuner):
            seen.append(dict(tuner.state.eval_metrics))

    def as_image(docs: DocumentArray) -> DocumentArray:
        for d in docs:
            d.tensor = (255 * d.tensor.clip(0, 1)).astype(np.uint8).transpose(1, 2, 0)
        return docs

    pre = vision_preprocessor(SIZE, SIZE, phase="validation")
    # the callback embeds with fit's preprocess_fn (tuner._preprocess_fn), as upstream
    callback = EvaluationCallback(query_data=as_image(labelled(4, seed=1)), index_data=as_image(labelled(4, seed=1)))
    fit(tiny_cnn(), as_image(labelled(6)), epochs=1, batch_size=4, loss="TripletLoss", preprocess_fn=pre,
        callbacks=[callback, Metrics()])
    assert len(seen) == 1 and 0.0 <= seen[0]["hit_at_k"] <= 1.0


def test_upstream_evaluation_callback_reports_metrics():
    """Finetuner's EvaluationCallback crashed on docarray 0.21 + numpy 2 (evaluate API,
    np.asfarray); through the plugin it fills tuner.state.eval_metrics."""
    from finetuner.tuner.callback import EvaluationCallback

    seen = []

    class Metrics(LossLog):
        def on_epoch_end(self, tuner):
            seen.append(dict(tuner.state.eval_metrics))

    queries = labelled(4, seed=1)
    callback = EvaluationCallback(query_data=queries, index_data=labelled(4, seed=1))
    fit(tiny_cnn(), labelled(6), epochs=1, batch_size=4, loss="TripletLoss", callbacks=[callback, Metrics()])
    assert len(seen) == 1
    metrics = seen[0]
    assert {"hit_at_k", "ndcg_at_k", "average_precision", "reciprocal_rank"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("hit_at_k", "ndcg_at_k", "average_precision"))
