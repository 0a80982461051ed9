"""Run by tests/test_distributed.py: once under ``torchrun --nproc_per_node=2`` (gloo, CPU)
and once as a plain single process, on the same data and seed; writes what it trained."""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict

import numpy as np
import torch
from docarray import Document, DocumentArray
from torch import nn

import finetuner_selfsup  # noqa: F401  (the plugin, also when the .pth is not active)
from finetuner_selfsup.fit import fit
from finetuner_selfsup.losses import NTXentLoss

out_dir = sys.argv[1]
rank = int(os.environ.get("RANK", "0"))
name = f"rank{rank}" if "WORLD_SIZE" in os.environ else "single"

rng = np.random.default_rng(0)
docs = DocumentArray(
    Document(id=f"img-{i}", tensor=rng.random((3, 12, 12), dtype=np.float32)) for i in range(12)
)
calls: dict = defaultdict(int)


def two_views(doc):
    """Deterministic 'augmentation': the first call of a document gives view 1, the second
    view 2 (the same in every process, whichever rank loads the document)."""
    k = calls[doc.id] % 2
    calls[doc.id] += 1
    x = torch.as_tensor(doc.tensor)
    return x * (1.0 + 0.3 * k) + 0.05 * k


torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
losses = []


class Record:
    def __getattr__(self, method):
        return lambda tuner, **kwargs: None

    def on_train_batch_end(self, tuner):
        losses.append(tuner.state.current_loss)


fit(
    model, docs, epochs=3, batch_size=8, loss=NTXentLoss(temperature=0.5), preprocess_fn=two_views,
    configure_optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.5), callbacks=[Record()], seed=3,
)
torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, os.path.join(out_dir, f"{name}.pt"))
with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump({"losses": losses}, f)

# The gathered NT-Xent on uneven shards (3 and 2 instances of 5): DDP's gradient average
# of the per-rank losses must equal the gradient of the single-process loss.
torch.manual_seed(7)
full = torch.randn(10, 4, dtype=torch.float64)  # views 1 of 5 instances, then views 2
labels = torch.arange(5).repeat(2)
if name == "single":
    z = full.clone().requires_grad_(True)
    loss = NTXentLoss(temperature=0.3)(z, labels)
    loss.backward()
    result = {"loss": loss.item(), "grad": z.grad.tolist()}
else:
    import torch.distributed as dist

    mine = [0, 1, 2] if rank == 0 else [3, 4]
    rows = mine + [i + 5 for i in mine]
    z = full[rows].clone().requires_grad_(True)
    loss = NTXentLoss(temperature=0.3)(z, labels[rows])
    loss.backward()
    grad = torch.zeros_like(full)
    grad[rows] = z.grad
    dist.all_reduce(grad)
    reported = torch.tensor([loss.item()], dtype=torch.float64)
    dist.all_reduce(reported)
    world = dist.get_world_size()
    result = {"loss": reported.item() / world, "grad": (grad / world).tolist()}  # DDP averages
with open(os.path.join(out_dir, f"{name}-uneven.json"), "w") as f:
    json.dump(result, f)

# Smoke runs: labelled data (class batches split by class, triplet loss) and the fast
# image path (JPEG documents, vision_preprocessor) under the same process group.
if name != "single":
    import tempfile

    from PIL import Image

    from finetuner_selfsup.augment.preprocessor import vision_preprocessor
    from finetuner_selfsup.losses import TripletLoss

    labelled = DocumentArray(
        Document(tensor=rng.random((3, 12, 12), dtype=np.float32), tags={"finetuner_label": i // 2}) for i in range(16)
    )
    torch.manual_seed(1)
    smoke = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    fit(smoke, labelled, epochs=1, batch_size=8, num_items_per_class=2, loss=TripletLoss(), seed=1)
    folder = tempfile.mkdtemp()
    images = DocumentArray()
    for i in range(8):
        path = os.path.join(folder, f"{i}.jpg")
        Image.fromarray((np.random.default_rng(i).random((20, 18, 3)) * 255).astype(np.uint8)).save(path)
        images.append(Document(uri=path))
    fit(smoke, images, epochs=1, batch_size=8, loss=NTXentLoss(), preprocess_fn=vision_preprocessor(16, 16), seed=1)
    torch.save(smoke.state_dict(), os.path.join(out_dir, f"{name}-smoke.pt"))
