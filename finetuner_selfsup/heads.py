"""Projection heads: the MLP that SimCLR trains on top of the embedding and then discards.

The contrastive loss is computed on the head's output, so that the embedding below it can
keep information the augmentations are invariant to (SimCLR, section 4.2). Layout follows
Finetuner 0.4.1 (and SimCLR v2): ``num_layers - 1`` blocks of Linear(no bias) ->
BatchNorm1d -> ReLU, then Linear(no bias) -> BatchNorm1d on the output.
"""
from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP projection head attached to an embedding model for self-supervised training.

    :param in_features: width of the embedding it sits on (2048 for ResNet-50 cut at its
        average pool).
    :param output_dim: width of the projection that the contrastive loss sees.
    :param num_layers: number of Linear layers (SimCLR v1 uses 2, v2 uses 3).
    """

    EPSILON = 1e-5

    def __init__(self, in_features: int, output_dim: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        if in_features < 1 or output_dim < 1:
            raise ValueError(
                f"ProjectionHead needs positive widths, got in_features={in_features}, "
                f"output_dim={output_dim}"
            )
        if num_layers < 1:
            raise ValueError(f"ProjectionHead needs num_layers >= 1, got {num_layers}")
        self.in_features = in_features
        self.output_dim = output_dim
        self.num_layers = num_layers
        # Attribute name kept from Finetuner 0.4.1 so its state_dicts load unchanged.
        self.head_layers = nn.ModuleList()
        for _ in range(num_layers - 1):
            self.head_layers.append(nn.Linear(in_features, in_features, bias=False))
            self.head_layers.append(nn.BatchNorm1d(in_features, eps=self.EPSILON))
            self.head_layers.append(nn.ReLU())
        self.head_layers.append(nn.Linear(in_features, output_dim, bias=False))
        self.head_layers.append(nn.BatchNorm1d(output_dim, eps=self.EPSILON))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"ProjectionHead(in_features={self.in_features}) got an input of shape "
                f"{tuple(x.shape)}; it expects (batch, {self.in_features}). Build the head "
                f"with in_features equal to the embedding width of the layer you cut at."
            )
        for layer in self.head_layers:
            x = layer(x)
        return x


class EmbeddingModelWithHead(nn.Sequential):
    """An embedding model with a projection head on top, as ``ft.fit`` returns it.

    It is the ``nn.Sequential(embed_model, projection_head)`` Finetuner 0.4.1 returns (same
    child names, same state_dict keys), with the two parts reachable as attributes:
    ``model.embed_model`` is the backbone alone, the one to use for feature extraction;
    ``model.projection_head`` the head. Passing this model back to ``ft.fit`` with
    ``to_embedding_model=True`` and a ``layer_name`` inside the backbone drops the head.
    """

    def __init__(self, embed_model: nn.Module, projection_head: nn.Module) -> None:
        super().__init__()
        self.add_module("embed_model", embed_model)
        self.add_module("projection_head", projection_head)


def is_model_with_head(model: nn.Module) -> bool:
    """True for :class:`EmbeddingModelWithHead` and for upstream's plain Sequential form."""
    if isinstance(model, EmbeddingModelWithHead):
        return True
    return isinstance(model, nn.Sequential) and [n for n, _ in model.named_children()] == [
        "embed_model",
        "projection_head",
    ]
