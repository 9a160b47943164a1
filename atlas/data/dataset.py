"""The torch Dataset over (episode, timestep) of indexed LIBERO HDF5 demos.

A sample follows the Batch contract of docs/ARCHITECTURE.md (before collation):

    images        uint8   [S, 3, H, W]  S = history * len(cameras), frame s = h * len(cameras) + c,
                                        h = 0 the current step; history before the episode start
                                        repeats the episode's first frame (may have channels-last
                                        strides: collation copies them into a contiguous batch)
    instruction   str
    actions       float32 [Hc, 7]       normalized chunk a[t], a[t+1], ...; past the episode end
                                        the LAST action is repeated (a valid, "keep going" value for
                                        anything that ignores the mask) and masked out
    action_mask   bool    [Hc]
    proprio       float32 [8]           normalized ee_states (6) + gripper_states (2)
    task_index, episode_index, timestep  int (episode_index indexes LiberoIndex.episodes,
                                        timestep is the raw step in the demo)

Keys are an int or a tuple (index, epoch); the epoch only seeds augmentation. Files are opened
lazily, once per process, by the index's frame reader (`FrameReader` for HDF5,
`LeRobotFrameReader` for LeRobot folders; never pickled, dropped after a fork), and only the
frames a sample needs are read. `__getitems__` serves a whole batch at once: its frames are read
into one buffer and resized by one uint8 kernel call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from atlas.config.schema import AugmentationConfig
from atlas.data.libero_hdf5 import LiberoIndex
from atlas.data.normalization import Normalizer
from atlas.data.transforms import (
    ORIENTATIONS,
    Orientation,
    apply_augmentation,
    augment_rng,
    orient_and_resize,
    preprocess_frames,
    sample_augment_params,
)

Key = int | tuple[int, int]


class SampleDataset(Dataset, ABC):
    """What the loaders, the trainer and the evaluator read from a dataset of samples.

    `LiberoDataset` (frames read from the files) and `atlas.cache.CachedFeatureDataset` (the
    frozen backbones' outputs read from the feature cache) are the two kinds.
    """

    @property
    @abstractmethod
    def tasks(self) -> list[str]:
        """Instructions; a sample's `task_index` indexes this list."""

    @property
    @abstractmethod
    def normalizer(self) -> Normalizer | None:
        """The statistics the samples' actions and proprio are normalized with."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, key: Key) -> dict[str, Any]: ...

    @abstractmethod
    def close(self) -> None:
        """Close open file handles (before workers fork; they reopen lazily)."""


class LiberoDataset(SampleDataset):
    """Samples of the episodes `episode_ids` of `index` (a train or validation split)."""

    def __init__(
        self,
        index: LiberoIndex,
        episode_ids: Sequence[int],
        *,
        cameras: Sequence[str],
        image_size: int,
        history: int = 1,
        chunk_size: int = 1,
        orientation: Orientation = "vflip",
        normalizer: Normalizer | None = None,
        augmentation: AugmentationConfig | None = None,
        seed: int = 0,
        blank_images: bool = False,
    ):
        self.index, self.episode_ids = index, [int(i) for i in episode_ids]
        self.cameras, self.image_size, self.history = list(cameras), image_size, history
        self.chunk_size, self.orientation, self.seed = chunk_size, orientation, seed
        self.augmentation = augmentation if augmentation and augmentation.enabled else None
        self.blank_images = blank_images  # the data.blank_images ablation
        self._episodes = [index.episodes[i] for i in self.episode_ids]
        if orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
        for camera in self.cameras:
            if any(camera not in ep.frame_shapes for ep in self._episodes):
                raise ValueError(f"camera {camera!r} was not checked when the index was built")
        lengths = [len(ep.steps) for ep in self._episodes]
        self._offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.normalizer = normalizer
        self._reader = index.frame_reader()

    # ------------------------------------------------------------------------------ public

    @property
    def tasks(self) -> list[str]:
        """Instructions; `task_index` indexes this list (shared by the train and val splits)."""
        return self.index.tasks

    @property
    def normalizer(self) -> Normalizer | None:
        return self._normalizer

    @normalizer.setter
    def normalizer(self, normalizer: Normalizer | None) -> None:
        # Normalize every episode's small arrays once instead of on every item.
        self._normalizer = normalizer
        norm = normalizer
        self._actions = [ep.actions for ep in self._episodes]
        self._proprio = [ep.proprio for ep in self._episodes]
        if norm is not None:
            self._actions = [norm.normalize_action(a).astype(np.float32) for a in self._actions]
            self._proprio = [norm.normalize_proprio(p).astype(np.float32) for p in self._proprio]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Sample index -> (position in episode_ids, position k in that episode's steps)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        e = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return e, index - int(self._offsets[e])

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, Any]]:
        """A list of samples; images of the whole list are resized in one call."""
        parsed = [_parse_key(k, len(self)) for k in keys]
        located = [self.locate(i) for i, _ in parsed]
        images = self._images(located)
        samples = []
        for (i, epoch), (e, k), img in zip(parsed, located, images):
            if self.augmentation is not None:
                img = self._augment(img, i, epoch)
            if self.blank_images:
                img = torch.zeros_like(img)
            samples.append(self._sample(e, k, img))
        return samples

    def lowdim_items(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Samples without "images", touching no file (training from cached image features)."""
        return [self._lowdim(*self.locate(int(i))) for i in indices]

    def close(self) -> None:
        """Close this process's file handles (they reopen lazily on the next access)."""
        self._reader.close()

    def reset_handles(self) -> None:
        """Drop handles inherited through fork (DataLoader worker_init_fn)."""
        self._reader.forget()

    # ---------------------------------------------------------------------------- internals

    def _read_camera(self, e: int, k: int, camera: str, out: np.ndarray) -> None:
        """Fill out uint8 [history, h, w, 3] with camera frames of step k, h = 0 the current one.

        History before the episode start repeats its first frame (copied, not re-read).
        """
        ep = self._episodes[e]
        for h in range(self.history):
            if h > 0 and k - h < 0:
                out[h] = out[h - 1]
            else:
                self._reader.read_into(ep.file, ep.demo, camera, int(ep.steps[k - h]), out[h])

    def _images(self, located: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Read, orient and resize: (episode, step) pairs -> list of uint8 [S, 3, H, W]."""
        size, cams, hist = self.image_size, self.cameras, self.history
        shapes = {self._episodes[e].frame_shapes[c] for e, _ in located for c in cams}
        if len(shapes) == 1:
            # One buffer [B, history, C, h, w, 3] filled in place, one resize call for the
            # whole batch, then split into [S, 3, H, W] per sample (s = h * C + c).
            buf = np.empty((len(located), hist, len(cams), *shapes.pop()), dtype=np.uint8)
            for b, (e, k) in enumerate(located):
                for c, camera in enumerate(cams):
                    self._read_camera(e, k, camera, buf[b, :, c])
            flat = torch.from_numpy(buf).flatten(0, 2)
            out = orient_and_resize(flat, size, self.orientation)
            return list(out.unflatten(0, (len(located), hist * len(cams))))
        result = []  # cameras of different sizes: each camera on its own
        for e, k in located:
            per_camera = []
            for camera in cams:
                frames = np.empty((hist, *self._episodes[e].frame_shapes[camera]), np.uint8)
                self._read_camera(e, k, camera, frames)
                per_camera.append(preprocess_frames(frames, size, self.orientation))
            result.append(torch.stack(per_camera, dim=1).flatten(0, 1))
        return result

    def _augment(self, images: torch.Tensor, index: int, epoch: int) -> torch.Tensor:
        """Per-camera crop / shift / colour parameters, shared by that camera's history frames."""
        assert self.augmentation is not None
        rng = augment_rng(self.seed, epoch, index)
        per_h = images.view(self.history, len(self.cameras), *images.shape[1:])
        cams = []
        for c in range(len(self.cameras)):  # parameters drawn camera by camera, in order
            params = sample_augment_params(rng, self.augmentation, self.image_size)
            cams.append(apply_augmentation(per_h[:, c], params))
        return torch.stack(cams, dim=1).reshape(images.shape)

    def _sample(self, e: int, k: int, images: torch.Tensor) -> dict[str, Any]:
        return {"images": images, **self._lowdim(e, k)}

    def _lowdim(self, e: int, k: int) -> dict[str, Any]:
        """Everything of sample (episode e, step k) but the images."""
        ep, horizon = self._episodes[e], self.chunk_size
        chunk = self._actions[e][k : k + horizon]
        valid = len(chunk)
        if valid < horizon:  # past the episode end: repeat the last action, masked out
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], horizon - valid, axis=0)])
        return {
            "instruction": self.index.tasks[ep.task],
            "actions": torch.tensor(chunk, dtype=torch.float32),  # a copy, not a view
            "action_mask": torch.arange(horizon) < valid,
            "proprio": torch.tensor(self._proprio[e][k], dtype=torch.float32),
            "task_index": ep.task,
            "episode_index": self.episode_ids[e],
            "timestep": int(ep.steps[k]),
        }


def _parse_key(key: Any, length: int) -> tuple[int, int]:
    """int | (index, epoch) -> (non-negative index, epoch); a bare index is epoch 0."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"a dataset key is an int or (index, epoch), got {key!r}")
        index, epoch = int(key[0]), int(key[1])
    else:
        index, epoch = int(key), 0
    return (index + length if index < 0 else index), epoch
