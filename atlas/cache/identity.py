"""What the cached features of one config are a function of: the inputs of its cache key.

    dataset        every HDF5 file (path, size, mtime_ns) and, per split, a hash of the sample
                   order (file, demo, raw steps of each episode, in dataset order)
    preprocessing  image size, orientation, cameras, history, augmentation settings (and the seed
                   and variant count when augmentation is on)
    backbone       VGGT preset architecture, layers read, weights (checkpoint file identity, or
                   the seeded random-init recipe); language model folder files, pooling, length,
                   dtype; the geometry options that decide what is extracted (pooling grid,
                   special tokens, points, pose)
    precision      the autocast the backbone runs under, and the dtype features are stored in

Normalization statistics, the action chunk and anything trainable are NOT inputs: the cache holds
backbone outputs only, and the rest of a sample is read from the dataset at training time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from atlas.cache.keys import file_identity, folder_identity, hash_arrays
from atlas.config.schema import AtlasConfig
from atlas.data.transforms import stored_orientation
from atlas.models.language import resolve_language_path
from atlas.models.vggt import get_vggt_preset

# VGGTConfig fields that change no output (memory/compute trade-offs and notes).
_VGGT_NON_FUNCTIONAL = {"notes", "activation_checkpointing", "dpt_frames_chunk_size"}


def dataset_inputs(splits: Mapping[str, Any]) -> dict[str, Any]:
    """Files and per-split sample order of LiberoDatasets {split: dataset} sharing one index."""
    index = next(iter(splits.values())).index
    files = index.identity_files()
    out: dict[str, Any] = {"files": [file_identity(f) for f in files], "splits": {}}
    for name, ds in splits.items():
        arrays: list[Any] = []
        for e in ds.episode_ids:
            ep = index.episodes[e]
            arrays += [[index.files[ep.file], ep.demo], np.asarray(ep.steps, dtype=np.int64)]
        out["splits"][name] = {"num_samples": len(ds), "samples_sha256": hash_arrays(arrays)}
    return out


def preprocessing_inputs(cfg: AtlasConfig) -> dict[str, Any]:
    d = cfg.data
    aug = d.augmentation
    out: dict[str, Any] = {
        "image_size": d.image_size,
        "orientation": d.orientation,
        **({"stored_orientation": stored_orientation(d)} if d.format != "libero_hdf5" else {}),
        "cameras": list(d.cameras),
        "history": d.history,
        "augmentation": None,
    }
    if d.blank_images:  # only when set, so the keys of existing caches stay valid
        out["blank_images"] = True
    if aug.enabled:
        # Variant v is the augmentation of epoch v drawn from (seed, v, index).
        out["augmentation"] = {**dataclasses.asdict(aug), "seed": cfg.training.seed}
    return out


def vggt_inputs(cfg: AtlasConfig) -> dict[str, Any]:
    v = cfg.model.vggt
    arch = {
        k: val
        for k, val in dataclasses.asdict(get_vggt_preset(v.preset)).items()
        if k not in _VGGT_NON_FUNCTIONAL
    }
    if v.checkpoint:
        weights: dict[str, Any] = {"checkpoint": file_identity(v.checkpoint)}
    else:
        # build_policy seeds a random-init backbone from training.seed alone, so the weights are
        # a function of (architecture, seed, torch's generator) and never need building here.
        weights = {"random_init_seed": cfg.training.seed, "torch": torch.__version__}
    return {"preset": v.preset, "architecture": arch, "layers": list(v.layers), "weights": weights}


def language_inputs(cfg: AtlasConfig, dtype: str) -> dict[str, Any]:
    lang = cfg.model.language_encoder
    folder = resolve_language_path(lang.name_or_path)
    return {
        "name_or_path": lang.name_or_path,
        "files": folder_identity(folder),  # config, tokenizer and weight files
        "pooling": lang.pooling,
        "max_length": lang.max_length,
        "dtype": dtype,
    }


def cache_key_inputs(
    cfg: AtlasConfig,
    splits: Mapping[str, Any],
    *,
    precision: str,
    language_dtype: str,
    store_dtype: str,
) -> dict[str, Any]:
    """The JSON tree the cache key digests (see module doc); `splits` = {name: LiberoDataset}."""
    g = cfg.model.geometry
    return {
        "dataset": dataset_inputs(splits),
        "preprocessing": preprocessing_inputs(cfg),
        "backbone": {
            "vggt": vggt_inputs(cfg),
            "language": language_inputs(cfg, language_dtype),
            "geometry": {
                "tokens_per_frame": g.tokens_per_frame,
                "keep_special_tokens": g.keep_special_tokens,
                "use_point_features": g.use_point_features,
                "point_source": g.point_source,
                "use_camera_pose": g.use_camera_pose,
            },
        },
        "precision": {"autocast": precision, "store_dtype": store_dtype},
    }
