"""NextItNet (Yuan et al., WSDM'19): stacked residual blocks of dilated causal 1-D
convolutions over the user's items, the next item predicted at every position.

`encode(..., patches=...)` takes one `blocks.sequence.BlockPatches` per residual block
(or None), PeterRec's model patches (Yuan et al., SIGIR'20); `residual_blocks` are the
blocks in order.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

from models.blocks.sequence import BlockPatches, NextItNetBlock
from models.families.sequential import SequentialModel, SequentialParams
from models.hparams import TrainingParams


@dataclasses.dataclass(frozen=True)
class NextItNetParams(SequentialParams):
    """Attributes (and those of SequentialParams):
      dilations: one residual block per value d (its convolutions dilate by d and 2d);
        (1, 4, 1, 4) gives convolutions dilated 1, 2, 4, 8, 1, 2, 4, 8.
      kernel_size: convolution width.
    """

    dilations: Tuple[int, ...] = (1, 4, 1, 4)
    kernel_size: int = 3
    # The best eval setting measured (protocol S, eval full NDCG@10): the last 10 items with
    # windows overlapping by half (stride 5 against none: commit bf6885a's run), then dim and
    # dropout on that (bench/results/tuning/sequential_stride_width.md), wider and more
    # regularised than SequentialParams'; both stay interior when widened to dim 256 and
    # dropout 0.7 (bench/results/tuning/sequential_nextitnet_wide.md). Test figures at these
    # defaults, with the peers on the same users: bench/results/sequential.md.
    dim: int = 128
    max_len: int = 10
    dropout: float = 0.5
    window_stride: int = 5
    training: TrainingParams = dataclasses.replace(SequentialParams.training, learning_rate=0.003, max_epochs=40,
                                                   patience=4)

    def __post_init__(self):
        super().__post_init__()
        if not self.dilations or min(self.dilations) < 1 or self.kernel_size < 1:
            raise ValueError(f"need dilations >= 1 (at least one) and kernel_size >= 1; got "
                             f"dilations={self.dilations}, kernel_size={self.kernel_size}")


class NextItNet(SequentialModel):
    """Item + behavior + position embeddings through dilated causal residual blocks."""

    def __init__(self, context, hparams: NextItNetParams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        self.residual_blocks = [
            NextItNetBlock(hparams.dim, d, hparams.kernel_size, dropout=hparams.dropout,
                           seed=context.seed + 100 + 10 * i, name=f"residual_{i}")
            for i, d in enumerate(hparams.dilations)]

    def encode(self, items, behaviors, training=False, patches: Optional[Sequence[Optional[BlockPatches]]] = None):
        if patches is not None and len(patches) != len(self.residual_blocks):
            raise ValueError(f"patches: one per residual block ({len(self.residual_blocks)}), got {len(patches)}")
        x = self.embedding(items, behaviors, training=training)
        for i, block in enumerate(self.residual_blocks):
            x = block(x, training=training, patches=None if patches is None else patches[i])
        return x
