"""Reusable Keras layers that families compose (see README "Model layer")."""

from models.blocks.core import (  # noqa: F401
    MLP,
    Bias,
    HistoryPooling,
    HistoryQuery,
    ItemEncoder,
    embedding,
    masked_mean,
    normal,
)
from models.blocks.experts import CGC, MMoE, PLE, Experts, Gate, Independent, SharedBottom  # noqa: F401,E402
