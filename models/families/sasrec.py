"""SASRec (Kang and McAuley, ICDM'18): causal self-attention over the user's items, the
next item predicted at every position."""

from __future__ import annotations

import dataclasses

from models.blocks.sequence import TransformerLayer
from models.families.sequential import SequentialModel, SequentialParams


@dataclasses.dataclass(frozen=True)
class SASRecParams(SequentialParams):
    """Attributes (and those of SequentialParams):
      layers: transformer layers.
      heads: attention heads per layer.
    """

    layers: int = 2
    heads: int = 2

    def __post_init__(self):
        super().__post_init__()
        if self.layers < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"need layers >= 1 and heads >= 1 dividing dim; got layers={self.layers}, "
                             f"heads={self.heads}, dim={self.dim}")


class SASRec(SequentialModel):
    """Item + behavior + position embeddings through causal transformer layers."""

    causal = True

    def __init__(self, context, hparams: SASRecParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        self.encoder_layers = [
            TransformerLayer(hparams.dim, hparams.heads, dropout=hparams.dropout, causal=self.causal,
                             seed=context.seed + 100 + 10 * i, name=f"transformer_{i}")
            for i in range(hparams.layers)]

    def encode(self, items, behaviors, training=False):
        x = self.embedding(items, behaviors, training=training)
        for layer in self.encoder_layers:
            x = layer(x, items, training=training)
        return x
