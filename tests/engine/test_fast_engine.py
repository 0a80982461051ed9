"""The engine's fast input path, precision and layout: what the model sees is unchanged."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray
from PIL import Image
from torch import nn

from finetuner_selfsup.augment import image_loading
from finetuner_selfsup.augment.preprocessor import VisionPreprocessor, vision_preprocessor
from finetuner_selfsup.engine.batched_views import BatchViews, PendingViews, SourceCollate, SourceDataset
from finetuner_selfsup.engine.data_kinds import DataKind
from finetuner_selfsup.engine.tuner import Tuner, resolve_precision
from finetuner_selfsup.fit import fit
from finetuner_selfsup.losses import NTXentLoss, TripletLoss

SIZE = 24


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 6)
    )


class ViewAfterConv(nn.Module):
    """Calls ``.view`` on a conv output: fails on channels-last tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * SIZE * SIZE, 5)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], -1))


def jpeg_docs(tmp_path, n: int, labels=None) -> DocumentArray:
    rng = np.random.default_rng(0)
    docs = DocumentArray()
    for i in range(n):
        path = tmp_path / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (30 + i % 3, 28, 3), dtype=np.uint8)).save(path)
        tags = {} if labels is None else {"finetuner_label": labels[i]}
        docs.append(Document(uri=str(path), tags=tags))
    return docs


@pytest.fixture(autouse=True)
def fresh_cache():
    image_loading.shared_image_cache().clear()
    yield


def test_self_supervised_fit_decodes_each_image_once_and_never_calls_preprocess_per_view(tmp_path, monkeypatch):
    docs = jpeg_docs(tmp_path, 8)
    decodes = []
    real_decode = image_loading.decode_image
    monkeypatch.setattr(image_loading, "decode_image", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    per_view = []
    monkeypatch.setattr(VisionPreprocessor, "__call__", lambda self, doc: per_view.append(doc))
    model = tiny_cnn()
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, docs, epochs=3, batch_size=8, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(SIZE, SIZE), seed=0)
    assert len(decodes) == 8  # 3 epochs x 2 views x 8 images, decoded 8 times
    assert per_view == []
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_batch_views_equal_the_preprocessor_output(tmp_path):
    """Deterministic settings: the fast path's batch is exactly the per-document outputs."""
    docs = jpeg_docs(tmp_path, 4)
    for normalize in (True, False):
        for axis in (0, -1):
            pre = vision_preprocessor(
                16, 16, target_channel_axis=axis, normalize=normalize, crop_scale=(1.0, 1.0),
                crop_ratio=(28 / 30, 28 / 30), hflip_p=0, color_jitter_p=0, grayscale_p=0, blur_p=0,
            )
            docs_30 = [d for d in docs if Image.open(d.uri).size == (28, 30)]
            dataset = SourceDataset(DocumentArray(docs_30), pre)
            batch = SourceCollate(BatchViews(pre, views_per_image=1), on_device=False)(
                [dataset[i] for i in range(len(dataset))]
            )
            expected = torch.stack([pre(d) for d in docs_30])
            assert batch.inputs.shape == expected.shape
            assert torch.allclose(batch.inputs, expected, atol=1e-5), (normalize, axis)


def test_self_supervised_batch_layout_and_labels(tmp_path):
    docs = jpeg_docs(tmp_path, 3)
    pre = vision_preprocessor(SIZE, SIZE)
    dataset = SourceDataset(docs, pre)
    batch = SourceCollate(BatchViews(pre, views_per_image=2), on_device=False)([dataset[i] for i in range(3)])
    assert batch.inputs.shape == (6, 3, SIZE, SIZE) and batch.inputs.dtype == torch.float32
    assert batch.labels.tolist() == [0, 1, 2, 0, 1, 2] and batch.indices == [0, 1, 2, 0, 1, 2]
    assert not torch.equal(batch.inputs[0], batch.inputs[3])  # two different views


def test_views_made_on_the_device_equal_views_made_in_collation(tmp_path):
    docs = jpeg_docs(tmp_path, 4)
    pre = vision_preprocessor(SIZE, SIZE)
    dataset = SourceDataset(docs, pre)
    items = [dataset[i] for i in range(4)]
    torch.manual_seed(3)
    here = SourceCollate(BatchViews(pre, 2), on_device=False)(items).inputs
    torch.manual_seed(3)
    pending = SourceCollate(BatchViews(pre, 2), on_device=True)(items).inputs
    assert isinstance(pending, PendingViews) and pending.sources.pixels.dtype == torch.uint8
    assert torch.equal(pending.make(torch.device("cpu")), here)


def test_labelled_fit_on_the_fast_path(tmp_path):
    docs = jpeg_docs(tmp_path, 8, labels=["a", "a", "b", "b", "c", "c", "d", "d"])
    model = tiny_cnn()
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, docs, epochs=2, batch_size=4, num_items_per_class=2, loss=TripletLoss(),
        preprocess_fn=vision_preprocessor(SIZE, SIZE), seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_unreadable_image_on_the_fast_path_is_skipped_and_named(tmp_path, caplog):
    docs = jpeg_docs(tmp_path, 6)
    (tmp_path / "002.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        fit(tiny_cnn(), docs, epochs=1, batch_size=6, loss=NTXentLoss(),
            preprocess_fn=vision_preprocessor(SIZE, SIZE), skip_unreadable=True, seed=0)
    assert "002.jpg" in caplog.text


def test_unreadable_image_without_skipping_names_the_file(tmp_path):
    docs = jpeg_docs(tmp_path, 4)
    (tmp_path / "001.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="001.jpg"):
        fit(tiny_cnn(), docs, epochs=1, batch_size=4, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(SIZE, SIZE))


def test_fast_path_with_data_loader_workers(tmp_path):
    docs = jpeg_docs(tmp_path, 8)
    model = tiny_cnn()
    fit(model, docs, epochs=2, batch_size=8, loss=NTXentLoss(),
        preprocess_fn=vision_preprocessor(SIZE, SIZE), num_workers=2, seed=0)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_seeded_fast_path_runs_are_identical(tmp_path):
    docs = jpeg_docs(tmp_path, 8)
    results = []
    for _ in range(2):
        model = tiny_cnn()
        fit(model, docs, epochs=2, batch_size=8, loss=NTXentLoss(),
            preprocess_fn=vision_preprocessor(SIZE, SIZE), seed=11)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


# ------------------------------------------------------------------ precision and layout


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(ValueError, match="'auto', 'fp32', 'bf16', 'fp16'"):
        resolve_precision("half", cpu)
    with pytest.raises(ValueError, match="precision"):
        fit(tiny_cnn(), DocumentArray(), precision="double")


def test_bf16_autocast_trains_with_float32_weights_and_loss(tmp_path):
    docs = jpeg_docs(tmp_path, 8)
    model = tiny_cnn()
    tuner = Tuner(model, loss=NTXentLoss(), precision="bf16")
    tuner.fit(docs, preprocess_fn=vision_preprocessor(SIZE, SIZE), epochs=1, batch_size=8)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(tuner.state.current_loss)


def test_channels_last_default_is_off_on_the_cpu_and_used_when_asked(tmp_path):
    docs = jpeg_docs(tmp_path, 4)
    assert Tuner(tiny_cnn(), device="cpu").channels_last is False
    model = tiny_cnn()
    fit(model, docs, epochs=1, batch_size=4, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(SIZE, SIZE),
        channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_model_that_rejects_channels_last_falls_back_with_a_warning(tmp_path, caplog):
    docs = jpeg_docs(tmp_path, 4)
    model = ViewAfterConv()
    before = model.fc.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        fit(model, docs, epochs=2, batch_size=4, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(SIZE, SIZE),
            channels_last=True)
    assert "channels-last" in caplog.text
    assert model.conv.weight.is_contiguous()
    assert not torch.equal(before, model.fc.weight)


def test_channels_last_false_keeps_the_model_layout(tmp_path):
    docs = jpeg_docs(tmp_path, 4)
    model = ViewAfterConv()
    fit(model, docs, epochs=1, batch_size=4, loss=NTXentLoss(),
        preprocess_fn=vision_preprocessor(SIZE, SIZE), channels_last=False)
    assert model.conv.weight.is_contiguous()


def test_gpu_code_path_on_the_cpu_gives_the_same_model(tmp_path, monkeypatch):
    """Views made 'on the device' (PendingViews, batches loaded by the prefetch thread)
    train exactly as views made in collation: forced here on the CPU."""
    import finetuner_selfsup.engine.batched_views as bv
    import finetuner_selfsup.engine.tuner as tuner_module

    docs = jpeg_docs(tmp_path, 8)
    results = []
    for force_device_path in (False, True):
        if force_device_path:
            real_init = bv.SourceCollate.__init__
            monkeypatch.setattr(
                bv.SourceCollate, "__init__", lambda self, make_views, on_device: real_init(self, make_views, True)
            )
            used = []
            real_prefetch = tuner_module.prefetch
            monkeypatch.setattr(tuner_module, "prefetch", lambda loader: used.append(1) or real_prefetch(loader))
        model = tiny_cnn()
        fit(model, docs, epochs=2, batch_size=8, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(SIZE, SIZE), seed=5)
        results.append([p.detach().clone() for p in model.parameters()])
    assert used == [1, 1]  # one prefetching loader per epoch
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_fast_path_skips_a_batch_left_with_one_readable_image(tmp_path):
    """Fast path, self-supervised: a batch of 2 images of which one file is missing keeps
    one image (two views, no negative); the step is skipped instead of NT-Xent raising."""
    docs = jpeg_docs(tmp_path, 4)
    (tmp_path / "000.jpg").unlink()
    trained = []

    class Count:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_train_batch_end(self, tuner):
            trained.append(tuner.state.current_loss)

    for seed in range(3):
        fit(tiny_cnn(), docs, epochs=1, batch_size=4, loss=NTXentLoss(),
            preprocess_fn=vision_preprocessor(SIZE, SIZE), skip_unreadable=True, seed=seed,
            callbacks=[Count()])
    assert len(trained) == 3  # of each run's two batches, the one with both images readable


class BatchNormThenView(nn.Module):
    """Batch-norm, then ``.view``: the channels-last attempt updates the running statistics
    before it fails."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def test_failed_channels_last_attempt_leaves_batchnorm_statistics_alone():
    """The fallback must not count the first batch twice in the running statistics."""
    rng = np.random.default_rng(0)
    docs = DocumentArray(Document(tensor=rng.standard_normal((3, 8, 8)).astype(np.float32)) for _ in range(4))

    def views(doc):
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(3, 8, 8)

    models = []
    for channels_last in (False, True):
        model = BatchNormThenView()
        fit(model, docs, epochs=1, batch_size=8, loss=NTXentLoss(), preprocess_fn=views, seed=0,
            channels_last=channels_last, learning_rate=0.0)
        models.append(model)
    plain, probed = models
    assert int(probed.bn.num_batches_tracked) == 1
    assert torch.allclose(plain.bn.running_mean, probed.bn.running_mean, atol=1e-6)
    assert torch.allclose(plain.bn.running_var, probed.bn.running_var, atol=1e-6)
