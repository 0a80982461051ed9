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
#: suffixes of model files: a missing path ending so is a mistyped file, not a new folder
_FILE_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".tar", ".safetensors"})


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
    script that always passes ``resume_from``). A missing path is taken for a folder not
    created yet, whatever its name (``runs/lr0.5`` too), unless it is named like a
    checkpoint (``saved_model_epoch_NN``) or a model file (``.pt``, ``.pth``, ``.ckpt``,
    ...): that is an error, so that a mistyped file name does not silently start afresh.

    The newest checkpoint of a folder is the one written last (see
    :func:`newest_checkpoint`), not the one of the highest epoch: a folder can hold a
    higher epoch left by an earlier, longer run.
    """
    path = Path(resume_from)
    looks_like_file = _NAME.match(path.name) or path.suffix.lower() in _FILE_SUFFIXES
    if path.is_dir() or not path.exists() and not looks_like_file:
        return newest_checkpoint(checkpoint_files(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"resume_from={str(resume_from)!r}: no such checkpoint file. Pass a file written "
            f"by TrainingCheckpoint (saved_model_epoch_NN) or the folder holding them."
        )
    return path


def newest_checkpoint(files: List[Path]) -> Optional[Path]:
    """The checkpoint written last among ``files`` (modification time; the higher epoch on a tie).

    A fresh run into a folder that holds an earlier, longer run's ``saved_model_epoch_03``
    writes ``_01`` and ``_02`` and leaves that file alone; resuming must continue the fresh
    run, not the stale one. Resuming from an older checkpoint of the *same* run (e.g. after
    a copy that did not keep modification times) is still exact, it only repeats epochs.
    """
    if not files:
        return None
    newest = max(files, key=lambda p: (p.stat().st_mtime_ns, _epoch_of(p)))
    ignored = [p.name for p in files if _epoch_of(p) > _epoch_of(newest)]
    if ignored:
        logger.warning(
            "resuming from %s, the checkpoint written last in %s; %s %s a higher epoch but "
            "older (left by an earlier run?) and %s ignored.", newest.name, newest.parent,
            ", ".join(ignored), "has" if len(ignored) == 1 else "have",
            "is" if len(ignored) == 1 else "are",
        )
    return newest


def _epoch_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


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
    :param last_k_epochs: keep only the newest ``k`` checkpoints of this run (``0`` or
        ``None``: all). Only files this run wrote (and, when it resumed from a checkpoint
        in ``save_dir``, that checkpoint) are ever deleted: an earlier run's files in the
        same folder are left alone.
    :param verbose: log every save and deletion.
    """

    def __init__(self, save_dir: str, last_k_epochs: int = 1, verbose: bool = False) -> None:
        self._save_dir = save_dir
        self._last_k_epochs = last_k_epochs
        self._logger = logging.getLogger("finetuner." + type(self).__name__)
        self._logger.setLevel(logging.INFO if verbose else logging.WARNING)
        #: checkpoints of this run, oldest first: the only files pruning may delete
        self._written: List[Path] = []

    def _path(self, epochs_done: int) -> Path:
        return Path(self._save_dir) / f"saved_model_epoch_{epochs_done:02d}"

    def on_fit_begin(self, tuner: Any) -> None:
        """A new run: forget an earlier fit's files. A resumed run owns the checkpoint it
        continues from, when that lies in ``save_dir``, and the interrupted run's earlier
        ones: lower epochs written no later than it (so ``last_k_epochs`` holds across an
        interruption); a higher epoch left by another run is never its own."""
        self._written = []
        resumed = getattr(tuner, "resumed_from", None)
        if resumed is None or Path(resumed).resolve().parent != Path(self._save_dir).resolve():
            return
        resumed = Path(resumed)
        written_at, epoch = resumed.stat().st_mtime_ns, _epoch_of(resumed)
        earlier = [p for p in checkpoint_files(self._save_dir)
                   if _epoch_of(p) < epoch and p.stat().st_mtime_ns <= written_at]
        self._written = earlier + [resumed]

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
        scaler = getattr(tuner, "_grad_scaler", None)
        if scaler is not None:  # fp16: the loss scale found so far
            state["grad_scaler"] = scaler.state_dict()
        path = save_atomically(state, self._path(epochs_done))
        self._logger.info("model trained for %d epochs is saved", epochs_done)
        self._written = [p for p in self._written if p.resolve() != path.resolve()] + [path]
        if self._last_k_epochs:
            while len(self._written) > self._last_k_epochs:
                old = self._written.pop(0)
                old.unlink(missing_ok=True)
                self._logger.info("deleted %s", old.name)

    @staticmethod
    def load(tuner: Any, fp: Union[str, Path]) -> None:
        """Restore a tuner from checkpoint ``fp`` (upstream's API; ``ft.fit(resume_from=...)``
        does this for you)."""
        restore_tuner(tuner, load_checkpoint(fp), fp)


#: what torch raises when a state dict does not fit the object it is loaded into
_MISMATCH = (RuntimeError, ValueError, KeyError, IndexError, TypeError)


def restore_tuner(tuner: Any, checkpoint: Dict[str, Any], source: Union[str, Path, None] = None) -> int:
    """Load model, optimiser, scheduler and random states into ``tuner``; return the epochs done.

    :param source: the checkpoint's path, named in the error when the checkpoint does not
        fit this run's model or optimiser (torch's own message names neither the file nor
        the likely cause: resuming with another model or other optimiser settings).
    """
    where = f"resume_from: the checkpoint {source}" if source is not None else "the checkpoint"
    try:
        tuner.embed_model.load_state_dict(checkpoint["state_dict"])
    except _MISMATCH as exc:
        raise ValueError(
            f"{where} holds weights of another model. Resume with the model of the run "
            f"that wrote it (same layers and sizes, and the same to_embedding_model/"
            f"layer_name/projection_head), or save a new run elsewhere. torch: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        tuner._optimizer.load_state_dict(checkpoint["optimizer"])
        if tuner._scheduler is not None and "scheduler" in checkpoint:
            tuner._scheduler.load_state_dict(checkpoint["scheduler"])
    except _MISMATCH as exc:
        raise ValueError(
            f"{where} holds the state of another optimiser or schedule. Resume with the "
            f"optimiser settings of the run that wrote it: the same configure_optimizer, "
            f"learning_rate and freeze (for self-supervised data, naming learning_rate or "
            f"not switches between constant Adam and the default AdamW schedule), or save "
            f"a new run elsewhere. torch: {type(exc).__name__}: {exc}"
        ) from exc
    if "rng" in checkpoint:
        restore_rng_state(checkpoint["rng"], getattr(tuner, "batch_order_generator", None))
    else:
        logger.warning(
            "the checkpoint holds no random states (written by Finetuner 0.4.1?): training "
            "resumes, but the batch order and augmentations differ from an uninterrupted run."
        )
    _restore_memory_bank(getattr(tuner, "_loss", None), checkpoint)
    scaler = getattr(tuner, "_grad_scaler", None)
    if scaler is not None and "grad_scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["grad_scaler"])  # else it starts from its initial scale
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
