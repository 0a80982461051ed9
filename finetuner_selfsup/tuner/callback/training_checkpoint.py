"""Mirror of ``finetuner.tuner.callback.training_checkpoint`` (implementation: ``engine.checkpoint``)."""
from ...engine.checkpoint import TrainingCheckpoint

__all__ = ["TrainingCheckpoint"]
