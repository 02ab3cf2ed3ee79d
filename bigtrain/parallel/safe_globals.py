"""The DeepSpeed types its ZeRO checkpoints hold besides tensors, allowed in bigtrain's weights-only loader.

DeepSpeed's optimizer-state files (`zero_pp_rank_*_optim_states.pt`) pickle a few of its own objects: the loss
scaler (a plain holder of the scale and its schedule), the ZeRO stage enum and the `fragment_address` named tuple of
a parameter's slice. All three are data (no `__reduce__`/`__setstate__` of their own), so rebuilding them runs no
code; every other global still refuses the file (bigtrain/safe_load.py). Lives in bigtrain/parallel, the only
package that may import deepspeed.
"""

from __future__ import annotations

import functools


@functools.cache
def allow_deepspeed_globals() -> None:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from bigtrain.safe_load import register_safe_globals

    register_safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address])
