"""Training checkpoints that survive a kill and let a run continue exactly where it was.

:class:`TrainingCheckpoint` is Finetuner 0.4.1's callback of the same name (same
arguments, same file names ``saved_model_epoch_NN``, same keys ``epoch``, ``state_dict``,
``optimizer``, ``scheduler``), with three changes:

* files are written atomically: to ``<name>.partial`` first, flushed to disk, then renamed,
  so a process killed while saving leaves the previous checkpoint intact and no
  half-written file under the real name;
* they also hold the random-number states (torch, CUDA, Python, numpy) and the batch
  order generator, so that ``ft.fit(..., resume_from=save_dir)`` continues the run
  bit-for-bit on CPU (with ``num_workers=0``; worker processes keep their own random
  state, so with workers a resumed run is equivalent in distribution, not identical);
* they also hold NT-Xent's memory bank (``memory_bank``, when the loss keeps one), which
  the resumed run's first batches use as negatives; checkpoints without it still load;
* they are read with ``torch.load(weights_only=True)``: only tensors and plain Python
  values, never arbitrary pickled objects.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from .callback_base import Callback

logger = logging.getLogger("finetuner_selfsup")

FORMAT = "finetuner-selfsup-checkpoint-1"
_NAME = re.compile(r"^saved_model_epoch_(\d+)$")


# -- random states ----------------------------------------------------------------------
def capture_rng_state(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every random state a training run draws from, as tensors and plain values."""
    bit_generator = np.random.get_state(legacy=False)
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_tensor(random.getstate()),
        "numpy": {
            "bit_generator": bit_generator["bit_generator"],
            "key": torch.from_numpy(np.asarray(bit_generator["state"]["key"], dtype=np.int64)),
            "pos": int(bit_generator["state"]["pos"]),
            "has_gauss": int(bit_generator["has_gauss"]),
            "gauss": float(bit_generator["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["batch_order"] = generator.get_state()
    return state


def restore_rng_state(state: Dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(_python_state_from_tensor(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": numpy_state["bit_generator"],
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "batch_order" in state:
        generator.set_state(state["batch_order"])


def _python_state_to_tensor(state: tuple) -> Dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_tensor(state: Dict[str, Any]) -> tuple:
    return state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"]


# -- files ------------------------------------------------------------------------------
def save_atomically(obj: Any, path: Union[str, Path]) -> Path:
    """``torch.save`` to ``path`` so that ``path`` is either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return path


def checkpoint_files(save_dir: Union[str, Path]) -> List[Path]:
    """Complete checkpoints in ``save_dir``, oldest epoch first (``.partial`` files ignored)."""
    folder = Path(save_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def find_checkpoint(resume_from: Union[str, Path]) -> Optional[Path]:
    """The checkpoint to resume from: the file itself, or the newest one in a folder.

    ``None`` when the folder does not exist yet or holds no checkpoint (a first run of a
    script that always passes ``resume_from``). A file path that does not exist is an error.
    """
    path = Path(resume_from)
    if path.is_dir() or not path.exists() and not path.suffix and not _NAME.match(path.name):
        files = checkpoint_files(path)
        return files[-1] if files else None
    if not path.is_file():
        raise FileNotFoundError(
            f"resume_from={str(resume_from)!r}: no such checkpoint file. Pass a file written "
            f"by TrainingCheckpoint (saved_model_epoch_NN) or the folder holding them."
        )
    return path


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; say clearly when it is not one."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a readable training checkpoint ({type(exc).__name__}: {exc}). "
            f"Delete it to resume from the previous one."
        ) from exc
    missing = {"epoch", "state_dict", "optimizer"} - set(checkpoint)
    if missing:
        raise ValueError(f"{path} is not a training checkpoint: it lacks {', '.join(sorted(missing))}.")
    return checkpoint


class TrainingCheckpoint(Callback):
    """Save model, optimiser, scheduler, random states and epoch after every epoch.

    :param save_dir: folder of the checkpoints (``saved_model_epoch_NN``).
    :param last_k_epochs: keep only the newest ``k`` checkpoints (``0`` or ``None``: all).
    :param verbose: log every save and deletion.
    """

    def __init__(self, save_dir: str, last_k_epochs: int = 1, verbose: bool = False) -> None:
        self._save_dir = save_dir
        self._last_k_epochs = last_k_epochs
        self._logger = logging.getLogger("finetuner." + type(self).__name__)
        self._logger.setLevel(logging.INFO if verbose else logging.WARNING)

    def _path(self, epochs_done: int) -> Path:
        return Path(self._save_dir) / f"saved_model_epoch_{epochs_done:02d}"

    def on_epoch_end(self, tuner: Any) -> None:
        epochs_done = tuner.state.epoch + 1
        state = {
            "format": FORMAT,
            "epoch": epochs_done,
            "state_dict": tuner.embed_model.state_dict(),
            "optimizer": tuner._optimizer.state_dict(),
            "rng": capture_rng_state(getattr(tuner, "batch_order_generator", None)),
        }
        if tuner._scheduler is not None and hasattr(tuner._scheduler, "state_dict"):
            state["scheduler"] = tuner._scheduler.state_dict()
        bank = getattr(getattr(tuner, "_loss", None), "memory_bank", None)
        if bank is not None:
            state["memory_bank"] = bank
        save_atomically(state, self._path(epochs_done))
        self._logger.info("model trained for %d epochs is saved", epochs_done)
        if self._last_k_epochs:
            for old in checkpoint_files(self._save_dir)[: -self._last_k_epochs]:
                old.unlink()
                self._logger.info("deleted %s", old.name)

    @staticmethod
    def load(tuner: Any, fp: Union[str, Path]) -> None:
        """Restore a tuner from checkpoint ``fp`` (upstream's API; ``ft.fit(resume_from=...)``
        does this for you)."""
        restore_tuner(tuner, load_checkpoint(fp))


def restore_tuner(tuner: Any, checkpoint: Dict[str, Any]) -> int:
    """Load model, optimiser, scheduler and random states into ``tuner``; return the epochs done."""
    tuner.embed_model.load_state_dict(checkpoint["state_dict"])
    tuner._optimizer.load_state_dict(checkpoint["optimizer"])
    if tuner._scheduler is not None and "scheduler" in checkpoint:
        tuner._scheduler.load_state_dict(checkpoint["scheduler"])
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"], getattr(tuner, "batch_order_generator", None))
    else:
        logger.warning(
            "the checkpoint holds no random states (written by Finetuner 0.4.1?): training "
            "resumes, but the batch order and augmentations differ from an uninterrupted run."
        )
    _restore_memory_bank(getattr(tuner, "_loss", None), checkpoint)
    tuner.state.epoch = checkpoint["epoch"]
    return int(checkpoint["epoch"])


def _restore_memory_bank(loss: Any, checkpoint: Dict[str, Any]) -> None:
    """Put NT-Xent's queue of earlier views back, so that the resumed run contrasts with the
    same negatives as an uninterrupted one."""
    size = getattr(loss, "memory_bank_size", 0)
    if not size:
        return
    bank = checkpoint.get("memory_bank")
    if bank is None:
        logger.warning(
            "the checkpoint holds no NT-Xent memory bank (written by an older version?): "
            "the queue starts empty, so the resumed run differs slightly from an "
            "uninterrupted one."
        )
    loss.memory_bank = None if bank is None else bank[-size:]
