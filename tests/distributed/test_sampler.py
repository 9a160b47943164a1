"""ResumableSampler: same order as DistributedSampler, (index, epoch) items, mid-epoch starts."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from atlas.distributed.env import DistInfo
from atlas.distributed.sampler import ResumableSampler


@pytest.mark.parametrize(
    "n,world,drop_last",
    [(10, 1, False), (10, 3, False), (10, 3, True), (2, 3, False), (12, 4, True)],
)
@pytest.mark.parametrize("shuffle", [True, False])
def test_matches_distributed_sampler(n: int, world: int, drop_last: bool, shuffle: bool) -> None:
    for rank in range(world):
        ours = ResumableSampler(n, DistInfo(rank=rank, world_size=world), shuffle, 7, drop_last)
        theirs = DistributedSampler(range(n), world, rank, shuffle, seed=7, drop_last=drop_last)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == [(i, epoch) for i in theirs]
            assert len(ours) == len(theirs) == ours.num_samples_per_rank


def test_pure_function_of_seed_and_epoch() -> None:
    a, b = ResumableSampler(50, DistInfo(), seed=1), ResumableSampler(50, DistInfo(), seed=1)
    a.set_epoch(5)
    b.set_epoch(2)
    list(b)  # iterating or visiting other epochs first changes nothing
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)


def test_mid_epoch_start_skips_without_loading() -> None:
    loaded: list[int] = []

    class Recording(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, item: tuple[int, int]) -> int:
            loaded.append(item[0])
            return item[0]

    sampler = ResumableSampler(20, DistInfo(rank=1, world_size=2), seed=3)
    sampler.set_epoch(4)
    full = [i for i, _ in sampler]
    sampler.set_epoch(4, start_batch=2, batch_size=3)
    assert len(sampler) == 10 - 6
    batches = [b.tolist() for b in DataLoader(Recording(), batch_size=3, sampler=sampler)]
    assert sum(batches, []) == full[6:] == loaded  # the 6 skipped samples were never read
    sampler.set_epoch(4, start_batch=9, batch_size=3)  # past the end: an empty epoch, no error
    assert list(sampler) == [] and len(sampler) == 0


def test_state_dict_round_trip_and_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = ResumableSampler(30, DistInfo(), seed=2)
    s.set_epoch(3, start_batch=1, batch_size=4)
    t = ResumableSampler(30, DistInfo(), seed=2)
    t.load_state_dict(s.state_dict())
    assert list(t) == list(s) and not caplog.records
    ResumableSampler(31, DistInfo(), seed=2).load_state_dict(s.state_dict())
    assert "num_samples changed" in caplog.text
