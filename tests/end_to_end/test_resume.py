"""Interruption: a run killed with SIGKILL mid-epoch resumes and ends with the same weights
as an uninterrupted run; checkpoints are atomic and Finetuner-compatible; unreadable images
can be skipped and are reported."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from docarray import Document, DocumentArray
from PIL import Image

from finetuner_selfsup.engine import checkpoint as ckpt
from finetuner_selfsup.engine.checkpoint import TrainingCheckpoint, find_checkpoint, save_atomically

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, torch
    from docarray import Document, DocumentArray
    from torch import nn
    import finetuner as ft
    from finetuner.tuner.callback import TrainingCheckpoint
    from finetuner.tuner.pytorch.losses import NTXentLoss

    mode, workdir = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    rng = np.random.default_rng(0)
    docs = DocumentArray(Document(tensor=rng.random((3, 12, 12), dtype=np.float32)) for _ in range(16))

    def jitter(doc):
        x = torch.as_tensor(doc.tensor)
        return x + 0.1 * torch.randn_like(x)

    class KillMidEpoch:
        def __getattr__(self, name):
            return lambda *a, **k: None
        def on_train_batch_end(self, tuner):
            if tuner.state.epoch == 2 and tuner.state.batch_index == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    def configure(m):
        optimizer = torch.optim.Adam(m.parameters(), lr=1e-2)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

    save_dir = os.path.join(workdir, "ckpt")
    callbacks = [TrainingCheckpoint(save_dir, last_k_epochs=2)]
    if mode == "killed":
        callbacks.append(KillMidEpoch())
    model = ft.fit(
        model, docs, epochs=4, batch_size=8, loss=NTXentLoss(), preprocess_fn=jitter,
        configure_optimizer=configure, scheduler_step="epoch", callbacks=callbacks, seed=1,
        resume_from=save_dir if mode == "resume" else None,
    )
    torch.save(model.state_dict(), os.path.join(workdir, "final.pt"))
    """
)


def run_script(tmp_path, mode: str, workdir) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    workdir.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(script), mode, str(workdir)], capture_output=True, text=True, timeout=300)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    full = run_script(tmp_path, "full", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    killed = run_script(tmp_path, "killed", tmp_path / "interrupted")
    assert killed.returncode == -9, killed.stderr  # SIGKILL, in the middle of the third epoch
    saved = sorted(p.name for p in (tmp_path / "interrupted" / "ckpt").iterdir())
    assert saved == ["saved_model_epoch_01", "saved_model_epoch_02"]  # complete files only
    assert not (tmp_path / "interrupted" / "final.pt").exists()
    resumed = run_script(tmp_path, "resume", tmp_path / "interrupted")
    assert resumed.returncode == 0, resumed.stderr

    expected = torch.load(tmp_path / "full" / "final.pt", weights_only=True)
    got = torch.load(tmp_path / "interrupted" / "final.pt", weights_only=True)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # and the run really trained: the weights differ from the initial ones
    torch.manual_seed(0)
    initial = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).state_dict()["0.weight"]
    assert not torch.equal(initial, got["0.weight"])


def test_checkpoint_is_upstream_shaped_and_loads_weights_only(tmp_path):
    from finetuner.tuner.callback import TrainingCheckpoint as ImportedThroughFinetuner

    assert ImportedThroughFinetuner is TrainingCheckpoint

    class Tuner:
        class state:
            epoch = 0

        embed_model = torch.nn.Linear(3, 2)
        _optimizer = torch.optim.SGD(embed_model.parameters(), lr=0.1)
        _scheduler = torch.optim.lr_scheduler.StepLR(_optimizer, step_size=1)
        batch_order_generator = torch.Generator().manual_seed(5)

    TrainingCheckpoint(str(tmp_path)).on_epoch_end(Tuner())
    data = torch.load(tmp_path / "saved_model_epoch_01", weights_only=True)
    assert {"epoch", "state_dict", "optimizer", "scheduler", "rng"} <= set(data)
    assert data["epoch"] == 1


def test_a_save_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "saved_model_epoch_01"
    save_atomically({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as if the process were stopped while writing

    monkeypatch.setattr(ckpt.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomically({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    # the half-written file never carries a checkpoint name, and resuming ignores it
    assert find_checkpoint(tmp_path) == path


def test_resume_from_an_empty_folder_starts_from_scratch(tmp_path):
    assert find_checkpoint(tmp_path / "not-yet") is None
    assert find_checkpoint(tmp_path / "lr0.5") is None  # a folder name with a dot, not created yet
    for typo in ("model.pt", "weights.PTH", "last.ckpt"):  # a mistyped file is not a new folder
        with pytest.raises(FileNotFoundError, match=typo):
            find_checkpoint(tmp_path / typo)
    assert find_checkpoint(tmp_path / "runs.v2" / "seed-1") is None
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        find_checkpoint(tmp_path / "saved_model_epoch_07")


def _image_docs(tmp_path, n=6):
    docs = DocumentArray()
    rng = np.random.default_rng(0)
    for i in range(n):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
        docs.append(Document(uri=str(path)))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    docs.append(Document(uri=str(bad)))
    return docs


def test_unreadable_images_stop_training_with_their_name(tmp_path):
    from finetuner_selfsup.augment.preprocessor import vision_preprocessor
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match="broken.jpg"):
        fit(model, _image_docs(tmp_path), epochs=1, batch_size=14, loss=NTXentLoss(),
            preprocess_fn=vision_preprocessor(16, 16))


def test_skip_unreadable_trains_on_the_rest_and_lists_every_skipped_file(tmp_path, caplog):
    from finetuner_selfsup.augment.preprocessor import vision_preprocessor
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    seen = []

    class Count:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_train_batch_end(self, tuner):
            seen.append(tuner.state.current_loss)

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        fit(model, _image_docs(tmp_path), epochs=2, batch_size=14, loss=NTXentLoss(),
            preprocess_fn=vision_preprocessor(16, 16), skip_unreadable=True, callbacks=[Count()])
    assert len(seen) == 2  # one batch per epoch, each without the broken image
    report = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 document(s) were skipped" in report and "broken.jpg" in report


def _vector_docs(n: int, seed: int = 0) -> DocumentArray:
    rng = np.random.default_rng(seed)
    return DocumentArray(Document(tensor=rng.standard_normal(6).astype(np.float32)) for _ in range(n))


def test_skip_unreadable_drops_a_self_supervised_batch_left_with_one_image():
    """Each image is listed twice in a self-supervised batch (one entry per view): a batch
    of 2 images with one unreadable keeps 1 image, which has no negative for NT-Xent, so
    the step must be skipped instead of NT-Xent raising."""
    from finetuner_selfsup.augment.image_loading import DocumentImageError
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    docs = _vector_docs(8)
    bad = {docs[i].id for i in (0, 1, 2)}

    def views(doc):
        if doc.id in bad:
            raise DocumentImageError(f"{doc.id}: cannot read")
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(6)

    class Steps:
        def __init__(self):
            self.losses = []

        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_train_batch_end(self, tuner):
            self.losses.append(tuner.state.current_loss)

    for seed in range(5):  # batch orders that pair an unreadable image with a readable one
        steps = Steps()
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        fit(model, docs, epochs=1, batch_size=4, loss=NTXentLoss(), preprocess_fn=views,
            skip_unreadable=True, seed=seed, callbacks=[steps])
        # 4 batches of 2 images, 5 readable: only batches with 2 readable images train
        assert 1 <= len(steps.losses) <= 2 and all(np.isfinite(steps.losses))


def test_a_self_supervised_batch_counts_images_not_views():
    from finetuner_selfsup.engine.collate import Batch
    from finetuner_selfsup.engine.data_kinds import DataKind
    from finetuner_selfsup.engine.tuner import Tuner

    tuner = Tuner(torch.nn.Linear(2, 2))
    one_image = Batch(None, torch.tensor([3, 3]), [3, 3], [("broken.jpg", "not an image")])
    assert tuner._note_skipped(one_image, DataKind.INSTANCE) is False
    two_images = Batch(None, torch.tensor([3, 5, 3, 5]), [3, 5, 3, 5], [])
    assert tuner._note_skipped(two_images, DataKind.INSTANCE) is True
    assert tuner._note_skipped(one_image, DataKind.CLASS) is True  # two items of a class batch


def _train_with_bank(save_dir, resume_from=None, epochs: int = 3) -> torch.Tensor:
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))

    def views(doc):
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(6)

    fit(model, _vector_docs(8), epochs=epochs, batch_size=4, loss=NTXentLoss(memory_bank_size=8),
        preprocess_fn=views, seed=0, callbacks=[TrainingCheckpoint(str(save_dir), last_k_epochs=0)],
        resume_from=resume_from)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_with_a_memory_bank_is_bit_for_bit(tmp_path):
    """The queue of earlier views is part of the run's state: a resumed run's first batches
    must contrast with the same queued negatives as the uninterrupted run's."""
    full = _train_with_bank(tmp_path / "full")
    saved = torch.load(tmp_path / "full" / "saved_model_epoch_01", weights_only=True)
    assert saved["memory_bank"].shape == (8, 8)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "saved_model_epoch_01").write_bytes((tmp_path / "full" / "saved_model_epoch_01").read_bytes())
    assert torch.equal(full, _train_with_bank(resumed_dir, resume_from=str(resumed_dir)))


def test_a_checkpoint_without_a_memory_bank_still_resumes(tmp_path, caplog):
    _train_with_bank(tmp_path / "full", epochs=1)
    checkpoint = torch.load(tmp_path / "full" / "saved_model_epoch_01", weights_only=True)
    del checkpoint["memory_bank"]  # as written before the bank was saved
    old = tmp_path / "old"
    old.mkdir()
    torch.save(checkpoint, old / "saved_model_epoch_01")
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        _train_with_bank(old, resume_from=str(old), epochs=2)
    assert "no NT-Xent memory bank" in caplog.text
    assert (old / "saved_model_epoch_02").exists()


def _short_run(save_dir, epochs: int, seed: int, resume_from=None, last_k_epochs: int = 1) -> torch.nn.Module:
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    torch.manual_seed(seed)
    model = torch.nn.Linear(6, 4)

    def views(doc):
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(6)

    fit(model, _vector_docs(8), epochs=epochs, batch_size=4, loss=NTXentLoss(), preprocess_fn=views,
        seed=seed, callbacks=[TrainingCheckpoint(str(save_dir), last_k_epochs=last_k_epochs)],
        resume_from=resume_from)
    return model


def _age(path, seconds: float = 3600) -> None:
    """Make ``path`` look written ``seconds`` ago (an earlier run's file)."""
    import os

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))


def test_a_fresh_run_keeps_its_own_checkpoints_beside_an_earlier_runs(tmp_path):
    """last_k_epochs prunes this run's files only: a 2-epoch run after a 3-epoch one in the
    same folder used to delete its own epoch_02 as 'older' than the stale epoch_03."""
    _short_run(tmp_path, epochs=3, seed=0)
    stale = tmp_path / "saved_model_epoch_03"
    _age(stale)
    stale_bytes = stale.read_bytes()
    model = _short_run(tmp_path, epochs=2, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model_epoch_02", "saved_model_epoch_03"]
    assert stale.read_bytes() == stale_bytes  # an earlier run's file: left alone
    saved = torch.load(tmp_path / "saved_model_epoch_02", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    # resuming continues the run written last, not the stale higher epoch
    assert find_checkpoint(tmp_path) == tmp_path / "saved_model_epoch_02"


def test_a_resumed_run_prunes_the_interrupted_runs_checkpoints_as_if_it_had_not_stopped(tmp_path):
    # last_k_epochs=2, interrupted after epoch 2, resumed to 4 epochs: epochs 3 and 4 are
    # kept, exactly as without the interruption; the run's epoch_01 and epoch_02 are its own
    _short_run(tmp_path, epochs=2, seed=0, last_k_epochs=2)  # writes epoch_01 and epoch_02
    _age(tmp_path / "saved_model_epoch_01", 7200)
    _age(tmp_path / "saved_model_epoch_02")
    _short_run(tmp_path, epochs=4, seed=0, resume_from=str(tmp_path), last_k_epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model_epoch_03", "saved_model_epoch_04"]


def test_a_resumed_run_leaves_a_higher_epoch_of_another_run_alone(tmp_path):
    _short_run(tmp_path, epochs=3, seed=1, last_k_epochs=0)  # another, longer run
    for epoch, age in ((1, 9000), (2, 8000), (3, 7000)):
        _age(tmp_path / f"saved_model_epoch_{epoch:02d}", age)
    other = (tmp_path / "saved_model_epoch_03").read_bytes()
    (tmp_path / "saved_model_epoch_03").rename(tmp_path / "saved_model_epoch_09")
    _short_run(tmp_path, epochs=2, seed=0, last_k_epochs=0)  # this run: newer epoch_01, 02
    _short_run(tmp_path, epochs=3, seed=0, resume_from=str(tmp_path), last_k_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model_epoch_03", "saved_model_epoch_09"]
    assert (tmp_path / "saved_model_epoch_09").read_bytes() == other


def test_resuming_from_a_folder_warns_about_an_ignored_higher_epoch(tmp_path, caplog):
    for epoch in (3, 1):  # epoch 3 written first: an earlier run's
        save_atomically({"epoch": epoch}, tmp_path / f"saved_model_epoch_{epoch:02d}")
        _age(tmp_path / f"saved_model_epoch_{epoch:02d}", 100 * epoch)
    with caplog.at_level(logging.WARNING, logger="finetuner_selfsup"):
        assert find_checkpoint(tmp_path) == tmp_path / "saved_model_epoch_01"
    assert "saved_model_epoch_03 has a higher epoch but older" in caplog.text


def test_resuming_with_another_model_or_optimiser_names_the_checkpoint(tmp_path):
    """torch's bare load_state_dict errors name neither the file nor the likely cause."""
    from finetuner_selfsup.fit import fit
    from finetuner_selfsup.losses import NTXentLoss

    _short_run(tmp_path, epochs=1, seed=0)  # Linear(6, 4), the self-supervised default optimiser
    checkpoint = re.escape(str(tmp_path / "saved_model_epoch_01"))

    def views(doc):
        return torch.as_tensor(doc.tensor) + 0.1 * torch.randn(6)

    common = dict(epochs=2, batch_size=4, loss=NTXentLoss(), preprocess_fn=views, seed=0, resume_from=str(tmp_path))
    with pytest.raises(ValueError, match=f"(?s){checkpoint} holds weights of another model.*size mismatch"):
        fit(torch.nn.Linear(6, 8), _vector_docs(8), **common)
    with pytest.raises(ValueError, match=f"(?s){checkpoint} holds the state of another optimiser.*learning_rate"):
        fit(torch.nn.Linear(6, 4), _vector_docs(8), learning_rate=1e-3, **common)  # constant Adam instead


def test_the_fp16_loss_scale_is_kept_in_checkpoints(tmp_path):
    # fp16 training (CUDA) scales the loss; the scale found so far is part of the run's
    # state, so a resumed run must not start again from the initial scale. Simulated with
    # stand-in tuners and torch's CPU GradScaler.
    from types import SimpleNamespace

    from finetuner_selfsup.engine.checkpoint import load_checkpoint, restore_tuner

    def tuner(scale: float) -> SimpleNamespace:
        model = torch.nn.Linear(2, 2)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale)
        scaler._lazy_init_scale_growth_tracker(torch.device("cpu"))
        return SimpleNamespace(
            embed_model=model, _optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            _scheduler=None, _loss=None, _grad_scaler=scaler, state=SimpleNamespace(epoch=0),
            batch_order_generator=torch.Generator().manual_seed(0),
        )

    writer = tuner(scale=512.0)
    TrainingCheckpoint(str(tmp_path)).on_epoch_end(writer)
    reader = tuner(scale=65536.0)
    restore_tuner(reader, load_checkpoint(tmp_path / "saved_model_epoch_01"))
    assert reader._grad_scaler.get_scale() == 512.0
