"""Mirror of ``finetuner.tailor.pytorch.projection_head`` (the implementation is in ``heads``)."""
from ...heads import ProjectionHead

__all__ = ["ProjectionHead"]
