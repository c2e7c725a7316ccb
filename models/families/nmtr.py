"""NMTR (Gao et al., ICDE'19): the behavior cascade over shared embeddings.

Each behavior's logit builds on the logit of the behavior before it in the funnel
(watched -> liked -> loved; viewed -> cart / fav -> buy):
logit_t = own_t + a_t * logit_{parent(t)}, with a_t learned (initially 1), so a
sparse late behavior starts from what its predecessor already knows. Tasks outside
the funnel (the rating) keep their own logit.
"""

from __future__ import annotations

import tensorflow as tf

from models import blocks
from models.multitask import MultiTaskModel, ancestors


class NMTRModel(MultiTaskModel):
    def __init__(self, context, hparams, **kwargs):
        super().__init__(context, hparams, **kwargs)
        self.parents = {t: (ancestors(context, t) or (None,))[0] for t in self.names}
        self.scales = {t: tf.Variable(1.0, name=f"cascade_{t}") for t, p in self.parents.items() if p}

    def make_bottom(self, names, hparams, seed):
        return blocks.Independent(names, hparams.bottom, seed=seed, name="bottom")

    def combine(self, logits):
        out = {}

        def resolve(name):
            if name not in out:
                parent = self.parents[name]
                out[name] = logits[name] + (self.scales[name] * resolve(parent) if parent else 0.0)
            return out[name]

        for name in self.names:
            resolve(name)
        return out
