"""Data-parallel training: per-rank shards of the global batch, and 2 processes (torchrun,
gloo, CPU) training exactly as one process on the same global batches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from docarray import Document

from finetuner_selfsup.distributed import (
    DistributedContext,
    ShardedBatchSampler,
    split_by_groups,
    split_contiguous,
)
from finetuner_selfsup.engine.samplers import ClassBatchSampler, InstanceBatchSampler

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HELPERS = HERE.parent / "helpers"


def shards(make_sampler, world_size, labels=None, min_per_rank=2):
    """Every rank's batches for one epoch (each rank with its own, identically seeded sampler)."""
    return [
        list(ShardedBatchSampler(make_sampler(), DistributedContext(r, world_size, r), labels, min_per_rank))
        for r in range(world_size)
    ]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_items", [12, 13, 31])
def test_instance_shards_cover_every_item_exactly_once(world_size, num_items):
    per_rank = shards(lambda: InstanceBatchSampler(num_items, 6, torch.Generator().manual_seed(1)), world_size)
    assert len({len(batches) for batches in per_rank}) == 1  # every rank takes the same steps
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(seen) == list(range(num_items))  # none twice, none lost
    assert all(len(batch) >= 2 for batches in per_rank for batch in batches)


def test_shards_are_contiguous_pieces_of_the_single_process_batches():
    single = list(InstanceBatchSampler(12, 4, torch.Generator().manual_seed(5)))
    per_rank = shards(lambda: InstanceBatchSampler(12, 4, torch.Generator().manual_seed(5)), 2)
    for step, batch in enumerate(single):
        assert per_rank[0][step] + per_rank[1][step] == batch


def test_shards_are_deterministic_given_the_seed_and_change_between_epochs():
    make = lambda: InstanceBatchSampler(20, 4, torch.Generator().manual_seed(9))  # noqa: E731
    assert shards(make, 2) == shards(make, 2)
    sampler = ShardedBatchSampler(make(), DistributedContext(0, 2, 0), None, 2)
    assert list(sampler) != list(sampler)


def test_small_last_global_batch_joins_the_previous_one():
    # 10 images, 4 per batch: 4, 4, 2 -> with 2 ranks and 2 images per rank, the last
    # batch (1 image a rank) joins the one before it: 4, 6
    per_rank = shards(lambda: InstanceBatchSampler(10, 4, torch.Generator().manual_seed(0)), 2)
    assert [len(b) for b in per_rank[0]] == [2, 3] and [len(b) for b in per_rank[1]] == [2, 3]


def test_class_batches_keep_each_class_on_one_rank():
    labels = [i // 4 for i in range(40)]  # 10 classes of 4
    per_rank = shards(lambda: ClassBatchSampler(labels, 8, 2, torch.Generator().manual_seed(2)), 2, labels)
    for batches in per_rank:
        for batch in batches:
            counts = {}
            for i in batch:
                counts[labels[i]] = counts.get(labels[i], 0) + 1
            assert all(c >= 2 for c in counts.values())  # positives stay together
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == len(set(seen))


def test_split_helpers():
    assert split_contiguous(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_by_groups([0, 1, 2, 3, 4, 5], ["a", "a", "b", "b", "c", "c"], 2) == [[0, 1, 2, 3], [4, 5]]


def test_too_small_a_global_batch_for_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="larger batch_size or fewer processes"):
        shards(lambda: InstanceBatchSampler(3, 2, torch.Generator().manual_seed(0)), 2)


def run_worker(out_dir: Path, torchrun: bool) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else [sys.executable]
    result = subprocess.run(
        [*launcher, str(HELPERS / "ddp_worker.py"), str(out_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_two_processes_train_exactly_as_one_on_the_same_global_batches(tmp_path):
    """torchrun, 2 processes, gloo: same losses and weights as 1 process (SGD, so a wrong
    gradient scale through the gathered NT-Xent would show), within 1e-5."""
    run_worker(tmp_path, torchrun=False)
    ddp = run_worker(tmp_path, torchrun=True)
    # our own gather: no deprecation warning from torch.distributed.nn's all_gather (torch >= 2.14)
    assert "all_gather" not in ddp.stderr, ddp.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt")
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key  # every rank returns the same model
        assert torch.allclose(rank0[key], single[key], atol=1e-5, rtol=0), key
    losses_single = json.loads((tmp_path / "single.json").read_text())["losses"]
    losses_ddp = json.loads((tmp_path / "rank0.json").read_text())["losses"]
    assert len(losses_single) == len(losses_ddp) == 9  # 3 epochs x 3 batches of 4 images
    assert losses_ddp == pytest.approx(losses_single, abs=1e-5)
    assert json.loads((tmp_path / "rank1.json").read_text())["losses"] == []  # callbacks: rank 0 only
    # the gathered NT-Xent with shards of 3 and 2 instances: loss and gradient as one process
    uneven_single = json.loads((tmp_path / "single-uneven.json").read_text())
    uneven_ddp = json.loads((tmp_path / "rank0-uneven.json").read_text())
    assert uneven_ddp["loss"] == pytest.approx(uneven_single["loss"], abs=1e-10)
    assert torch.allclose(torch.tensor(uneven_ddp["grad"]), torch.tensor(uneven_single["grad"]), atol=1e-10)
    # labelled data (class batches, triplet loss) and the fast image path also run under
    # DDP, and both ranks end with the same weights
    smoke0 = torch.load(tmp_path / "rank0-smoke.pt")
    smoke1 = torch.load(tmp_path / "rank1-smoke.pt")
    for key in smoke0:
        assert torch.equal(smoke0[key], smoke1[key]) and torch.isfinite(smoke0[key]).all(), key


def test_sync_batchnorm_conversion_is_undone_exactly():
    from torch import nn

    from finetuner_selfsup.distributed import convert_sync_batchnorm, revert_sync_batchnorm

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=0.3)))
    model[1].running_mean.add_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    originals = convert_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[3][1], nn.SyncBatchNorm)
    revert_sync_batchnorm(model, originals)
    assert type(model[1]) is nn.BatchNorm2d and type(model[3][1]) is nn.BatchNorm1d
    assert model[3][1].momentum == 0.3
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_sync_batchnorm_on_the_cpu_is_a_clear_error():
    from torch import nn

    from finetuner_selfsup.fit import fit

    with pytest.raises(ValueError, match="GPU"):
        fit(nn.Linear(2, 2), [], sync_batchnorm=True)


def test_a_share_left_without_two_readable_images_stops_with_the_file_names():
    from torch import nn

    from finetuner_selfsup.engine.collate import Batch
    from finetuner_selfsup.engine.tuner import Tuner

    tuner = Tuner(nn.Linear(2, 2))
    tuner.distributed = DistributedContext(1, 2, 1)  # as on the second of two processes
    batch = Batch(None, torch.empty(0), [3], [("broken.jpg", "not an image")])
    with pytest.raises(RuntimeError, match="process 1's share.*broken.jpg"):
        tuner._note_skipped(batch)
    tuner.distributed = None
    assert tuner._note_skipped(batch) is False  # one process: the step is skipped, as before


def test_uneven_shares_of_the_global_batch_are_announced(caplog):
    import logging

    from finetuner_selfsup.engine.data_kinds import DataKind
    from finetuner_selfsup.engine.tuner import Tuner

    tuner = Tuner(torch.nn.Linear(2, 2))
    tuner.distributed = DistributedContext(0, 4, 0)
    with caplog.at_level(logging.INFO, logger="finetuner_selfsup"):
        tuner._shard(InstanceBatchSampler(40, 10, torch.Generator().manual_seed(0)), DataKind.INSTANCE, None)
    assert "10 images a step shared by 4 processes" in caplog.text and "(2 or 3)" in caplog.text


def test_a_self_supervised_share_with_one_readable_image_stops_naming_images():
    from torch import nn

    from finetuner_selfsup.engine.collate import Batch
    from finetuner_selfsup.engine.data_kinds import DataKind
    from finetuner_selfsup.engine.tuner import Tuner

    tuner = Tuner(nn.Linear(2, 2))
    tuner.distributed = DistributedContext(1, 2, 1)
    batch = Batch(None, torch.tensor([3, 3]), [3, 3], [("broken.jpg", "not an image")])  # 1 image, 2 views
    with pytest.raises(RuntimeError, match="fewer than 2 readable images.*broken.jpg"):
        tuner._note_skipped(batch, DataKind.INSTANCE)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_sync_batchnorm_is_undone_when_training_stops(monkeypatch, stop):
    # The layers are swapped in place inside the caller's model; an interruption (the
    # model is handed back) or an error must not leave SyncBatchNorm layers behind.
    # GPU-only in real use, so the conversion is done here as under DDP, on the CPU.
    from torch import nn

    from finetuner_selfsup.distributed import convert_sync_batchnorm
    from finetuner_selfsup.engine.tuner import Tuner
    from finetuner_selfsup.fit import fit

    def wrap_as_under_ddp(self):
        self._batchnorm_originals = convert_sync_batchnorm(self._embed_model)

    class StopsAtTheSecondBatch(nn.Module):
        calls = 0

        def forward(self, embeddings, labels):
            StopsAtTheSecondBatch.calls += 1
            if StopsAtTheSecondBatch.calls == 2:
                raise stop("stopped")
            return embeddings.pow(2).mean()

    monkeypatch.setattr(Tuner, "_wrap_for_data_parallel", wrap_as_under_ddp)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    docs = [Document(id=f"d{i}", tensor=np.full(4, float(i), np.float32)) for i in range(8)]
    run = lambda: fit(model, docs, epochs=1, batch_size=4, loss=StopsAtTheSecondBatch(),  # noqa: E731
                      preprocess_fn=lambda d: d.tensor)
    if stop is KeyboardInterrupt:
        run()  # upstream's behaviour: the model trained so far is returned
    else:
        with pytest.raises(RuntimeError, match="stopped"):
            run()
    assert StopsAtTheSecondBatch.calls == 2
    assert type(model[1]) is nn.BatchNorm1d
