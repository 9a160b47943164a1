"""Loading VGGT weights from a local `.pt` state dict or `.safetensors` file.

Nothing is downloaded and nothing is unpickled beyond tensors (torch.load(weights_only=True)).
The official `facebook/VGGT-1B` `model.pt` is a raw state dict; its `track_head.*` keys are
dropped because the track head is not implemented here. Any other difference is an error.

Memory: build the model on the meta device (`build_vggt(config, device="meta")`); loading then
assigns the checkpoint tensors as parameters (`load_state_dict(assign=True)`), so VGGT-1B
(5 GB in fp32) needs one copy, not two. `.pt` files are memory-mapped when possible.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from atlas.config.vggt import VGGT_1B, VGGTConfig
from atlas.models.vggt.aggregator import Aggregator
from atlas.models.vggt.model import VGGT, build_vggt

logger = logging.getLogger(__name__)

NOT_IMPLEMENTED_PREFIXES = ("track_head.",)
_LIST_LIMIT = 10


class WeightsError(RuntimeError):
    """A VGGT weights file (`model.vggt.checkpoint`) that cannot be read or does not fit the
    model. Not a training checkpoint: those raise `atlas.checkpoint.layout.CheckpointError`."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat {name: tensor} state dict from `.safetensors` or a torch file, on CPU."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"VGGT checkpoint {path} is a directory; give its .pt or .safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"VGGT checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = _torch_load(path)
    except Exception as exc:  # corrupt file, pickled objects, wrong format...
        raise WeightsError(f"cannot read VGGT checkpoint {path}: {brief_error(exc)}") from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{path} is not a flat state dict of tensors (non-tensor entries: {bad[:_LIST_LIMIT]})"
        )
    return dict(state)


def brief_error(exc: BaseException) -> str:
    """One line saying why a load failed (torch's weights_only message is a page long and
    suggests weights_only=False, which this package never does)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text[text.index(marker) + len(marker) :].split(". ")[0].split(" Check the ")[0]
        detail = detail.strip()
        return f"not a plain tensor file, refused by torch.load(weights_only=True): {detail}"
    return (text or type(exc).__name__)[:300]


def _torch_load(path: Path) -> dict[str, Tensor]:
    """torch.load with weights_only; memory-mapped (no copy in RAM) when the format allows it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise
        # Legacy (non-zip) serialisation cannot be memory-mapped.
        return torch.load(path, map_location="cpu", weights_only=True)


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_state_dict(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], source: str
) -> None:
    """Raise WeightsError listing missing, unexpected and wrongly shaped keys, if any."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        message = f"VGGT checkpoint {source} does not match the model"
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                message += _listing(title, items)
        raise WeightsError(message)


def _prefixes_to_drop(model: VGGT) -> list[str]:
    """Checkpoint prefixes this model has no module for: the track head and disabled heads."""
    disabled = [
        f"{n}." for n in ("camera_head", "point_head", "depth_head") if getattr(model, n) is None
    ]
    return list(NOT_IMPLEMENTED_PREFIXES) + disabled


def load_vggt_weights(model: VGGT, path: str | Path) -> list[str]:
    """Load a VGGT checkpoint strictly into `model`; returns the dropped keys.

    `track_head.*` keys (and keys of heads disabled in the config) are dropped, with one log line.
    Any other missing / unexpected key or shape mismatch raises WeightsError naming the file.
    A model on the meta device gets the checkpoint tensors assigned (no second copy) and its
    non-persistent buffers materialised on the checkpoint's device (CPU).
    """
    return load_vggt_state_dict(model, read_state_dict(path), str(path))


def load_vggt_state_dict(
    model: VGGT, state: Mapping[str, Tensor], source: str = "<state dict>"
) -> list[str]:
    """load_vggt_weights for an in-memory state dict; `source` names it in messages."""
    prefixes = tuple(_prefixes_to_drop(model))
    dropped = [k for k in state if k.startswith(prefixes)]
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    if dropped:
        groups = sorted({p + "*" for k in dropped for p in prefixes if k.startswith(p)})
        logger.info(
            "%s: dropped %d keys (%s): no such module", source, len(dropped), ", ".join(groups)
        )
    check_state_dict(state, model.state_dict(), source)
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(state, strict=True, assign=on_meta)
    if on_meta:
        _materialize_buffers(model)
    return dropped


def _materialize_buffers(model: nn.Module) -> None:
    """Recreate buffers that are not in the state dict (left on meta by a meta-device build)."""
    for module in model.modules():
        if isinstance(module, Aggregator):
            module.init_non_persistent_buffers(module.camera_token.device)
    still_meta = [name for name, t in model.named_buffers() if t.is_meta]
    still_meta += [name for name, t in model.named_parameters() if t.is_meta]
    if still_meta:
        raise WeightsError(f"tensors left on the meta device after loading: {still_meta[:10]}")


def load_pretrained_vggt(
    path: str | Path, config: VGGTConfig = VGGT_1B, device: torch.device | str = "cpu"
) -> VGGT:
    """Build VGGT on the meta device, load `path` into it, move it to `device`, set eval()."""
    model = build_vggt(config, device="meta")
    load_vggt_weights(model, path)
    return model.to(device).eval()
