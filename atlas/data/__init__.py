"""Data: the LIBERO HDF5 and LeRobotDataset readers, transforms, normalization, the synthetic
generator and the LeRobotDataset writer.

The API the rest of AtlasVLA codes against (docs/ARCHITECTURE.md):
    build_datasets(cfg) -> (train, val | None, normalizer)
    build_dataloader(dataset, cfg, sampler, train) -> DataLoader
    preprocess_frames(frames, image_size, orientation)   the resize/orientation evaluation reuses
"""

from atlas.data.build import (
    IndexEpochSampler,
    build_dataloader,
    build_datasets,
    split_episodes,
)
from atlas.data.dataset import LiberoDataset
from atlas.data.errors import DataError
from atlas.data.lerobot import LeRobotIndex, build_lerobot_index
from atlas.data.lerobot_write import convert_to_lerobot
from atlas.data.libero_hdf5 import LiberoIndex, build_index, instruction_from_filename
from atlas.data.normalization import Normalizer, load_stats, save_stats
from atlas.data.stats import compute_stats
from atlas.data.synthetic import generate_synthetic
from atlas.data.transforms import preprocess_frames

__all__ = [
    "DataError",
    "IndexEpochSampler",
    "LeRobotIndex",
    "LiberoDataset",
    "LiberoIndex",
    "Normalizer",
    "build_dataloader",
    "build_datasets",
    "build_index",
    "build_lerobot_index",
    "compute_stats",
    "convert_to_lerobot",
    "generate_synthetic",
    "instruction_from_filename",
    "load_stats",
    "preprocess_frames",
    "save_stats",
    "split_episodes",
]
