"""`training.compile`: torch.compile applied per transformer block (regional compilation).

Compiling the whole policy hands Dynamo one graph of ~72 VGGT-1B/DINO blocks plus the Python
glue around them (the instruction cache, the batch dict): minutes of compilation, and graph
breaks wherever the glue is dynamic. Compiling each repeated block instead (torchtitan's
`apply_compile`) traces one block and reuses its code for the identical siblings, whose
parameters are graph inputs rather than constants, so even the 1B backbone compiles in a few
graphs; the glue stays eager. Applied in place before the strategy wraps the policy, as FSDP2
wants: state_dict keys, methods and parameter identities are unchanged.

    compiled units = VGGT Block (aggregator frame/global blocks, DINO blocks) and FusionLayer;
                     the language model is left out (frozen, it runs once per instruction).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from atlas.models.fusion import FusionLayer
from atlas.models.vggt.layers import Block

log = logging.getLogger(__name__)

COMPILED_TYPES = (Block, FusionLayer)


def compile_blocks(policy: nn.Module, **compile_kwargs: Any) -> int:
    """Compile every block of `policy` in place (see module doc); returns how many."""
    count = 0
    for name, module in policy.named_modules():
        if isinstance(module, COMPILED_TYPES) and not name.startswith("language_encoder."):
            module.compile(**compile_kwargs)
            count += 1
    log.info("torch.compile: %d blocks compiled (regional), the rest runs eagerly", count)
    return count
