"""Reusable Keras layers that families compose (see README "Model layer")."""

from models.blocks.core import (  # noqa: F401
    MLP,
    Bias,
    HistoryPooling,
    HistoryQuery,
    ItemEncoder,
    TextEncoder,
    TypedFeatures,
    UserEncoder,
    embedding,
    masked_mean,
    normal,
)
from models.blocks.experts import CGC, MMoE, PLE, Experts, Gate, Independent, SharedBottom  # noqa: F401,E402
from models.blocks.distill import (  # noqa: F401,E402
    AugmentedBPR,
    PlattScaling,
    bpr,
    correct_soft_labels,
    distillation_loss,
    label_pair_masks,
)
from models.blocks.interest import REFINE_GATES, ConditionalLayerNorm, Refinement, TaskInterest, typed_sequences  # noqa: F401,E402
from models.blocks.text import (  # noqa: F401,E402
    DocumentEncoder,
    MutualAttention,
    SequenceGenerator,
    TextDiscriminator,
    TokenEncoder,
    WordAttention,
    decoder_targets,
)
