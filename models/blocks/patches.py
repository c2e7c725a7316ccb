"""PeterRec's fine-tuning modes (Yuan et al., SIGIR'20): what is trained on a downstream task.

A pretrained NextItNet (embedding + residual blocks) gets a new head per task. The
modes differ in which weights the task trains and in what is added:

| mode | pretrained weights | trained |
|---|---|---|
| `scratch` | not loaded (random) | everything |
| `fine_all` | loaded | everything |
| `fine_cls` | loaded, frozen | the head |
| `fine_last` | loaded, frozen but the last block | the last residual block (and the layer norm after it) + the head |
| `patch_serial` | loaded, frozen | a patch after each dilated convolution + the head |
| `patch_parallel` | loaded, frozen | a patch beside each residual block + the head |

A serial patch is `models.blocks.sequence.BottleneckPatch`, x + up(relu(down(x))); a
parallel patch is the same bottleneck without the skip (`skip=False`), whose output is
added to the block's. Both start with `up` = 0, so a freshly patched network computes
exactly what the pretrained one did. With model width d, bottleneck k and B blocks, the
patches hold 2B(2dk + d + k) (serial) or B(2dk + d + k) (parallel) weights, a few
percent of the network's.

`apply_mode` sets the `trainable` flags (on the layers themselves: a frozen container
would hide a trainable child's weights); `trained_parameter_count` counts what an
optimizer then updates (what the paper's tables report).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tf_keras as keras

from models.blocks.sequence import BlockPatches, BottleneckPatch, NextItNetBlock

SCRATCH = "scratch"
FINE_ALL = "fine_all"
FINE_CLS = "fine_cls"
FINE_LAST = "fine_last"
PATCH_SERIAL = "patch_serial"
PATCH_PARALLEL = "patch_parallel"
MODES = (SCRATCH, FINE_ALL, FINE_CLS, FINE_LAST, PATCH_SERIAL, PATCH_PARALLEL)
PATCH_MODES = (PATCH_SERIAL, PATCH_PARALLEL)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; expected one of {MODES}")
    return mode


def loads_pretrained(mode: str) -> bool:
    """Whether the mode starts from the pretrained weights (all but `scratch`)."""
    return check_mode(mode) != SCRATCH


def make_patches(mode: str, num_blocks: int, dim: int, bottleneck: int, seed: int = 0) -> List[Optional[BlockPatches]]:
    """One `BlockPatches` per residual block for a patch mode; None per block otherwise."""
    check_mode(mode)
    if bottleneck < 1:
        raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
    out: List[Optional[BlockPatches]] = []
    for b in range(num_blocks):
        if mode == PATCH_SERIAL:
            out.append(BlockPatches(serial=[
                BottleneckPatch(dim, bottleneck, seed=seed + 10 * b + i, name=f"patch_{b}_serial_{i}")
                for i in range(NextItNetBlock.CONVOLUTIONS)]))
        elif mode == PATCH_PARALLEL:
            out.append(BlockPatches(parallel=BottleneckPatch(dim, bottleneck, seed=seed + 10 * b, skip=False,
                                                             name=f"patch_{b}_parallel")))
        else:
            out.append(None)
    return out


def patch_layers(patches: Sequence[Optional[BlockPatches]]) -> List[keras.layers.Layer]:
    """Every patch layer of a list of `BlockPatches`."""
    layers: List[keras.layers.Layer] = []
    for p in patches:
        if p is None:
            continue
        layers.extend(p.serial)
        if p.parallel is not None:
            layers.append(p.parallel)
    return layers


def apply_mode(mode: str, pretrained: Sequence[keras.layers.Layer], blocks: Sequence[keras.layers.Layer],
               patches: Sequence[Optional[BlockPatches]], head: keras.layers.Layer) -> None:
    """Sets what trains in `mode` (call before compiling).

    Args:
      mode: one of MODES.
      pretrained: every pretrained layer (embedding and blocks included).
      blocks: the residual blocks, in order (the last one trains in `fine_last`).
      patches: the patches from `make_patches` (trained in the patch modes).
      head: the task's new head (always trained).
    """
    check_mode(mode)
    everything = mode in (SCRATCH, FINE_ALL)
    for layer in pretrained:
        layer.trainable = everything
    if mode == FINE_LAST:
        if not blocks:
            raise ValueError("fine_last needs at least one residual block")
        blocks[-1].trainable = True
    for layer in patch_layers(patches):
        layer.trainable = True
    head.trainable = True


def parameter_count(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def trained_parameter_count(model: keras.Model) -> int:
    """Weights an optimizer updates when `model` trains (its trainable variables)."""
    return parameter_count(model.trainable_variables)
