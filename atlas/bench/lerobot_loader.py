"""LeRobot's own loader on a LeRobotDataset folder: samples/s (`atlas.bench.data --format lerobot`).

Runs under the `lerobot` package's interpreter (it needs Python >= 3.12 and its own torch), so it
imports nothing from AtlasVLA:

    LEROBOT_PYTHON atlas/bench/lerobot_loader.py ROOT --workers 2 --batch-size 32 --batches 30

`LeRobotDataset(root, video_backend="pyav")` in a torch DataLoader with the same random sampling,
batch size and worker count as AtlasVLA's side; throughput after the first batch, the median of
`--windows` windows. Prints one JSON line. LeRobot returns float32 frames at the stored size (no
resize), every feature of the dataset, and decodes video with PyAV (torchcodec needs the system's
FFmpeg libraries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()

    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from torch.utils.data import DataLoader, RandomSampler

    dataset = LeRobotDataset("local/bench", root=args.root, video_backend="pyav")
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=10**7, generator=torch.Generator().manual_seed(0)
    )
    extra = {"prefetch_factor": 2, "persistent_workers": True} if args.workers else {}
    loader = DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers, **extra
    )
    it = iter(loader)
    next(it)  # worker start-up is not timed
    rates = []
    for _ in range(args.windows):
        count, start = 0, time.perf_counter()
        for _ in range(args.batches):
            count += len(next(it)["index"])
        rates.append(count / (time.perf_counter() - start))
    record = {"lerobot_samples_per_s": statistics.median(rates), "workers": args.workers}
    if args.workers == 0:  # samples per CPU-second of this process, which does all the loading
        torch.set_num_threads(1)  # as in a DataLoader worker; CPU time of one thread
        count, start = 0, time.process_time()
        for _ in range(args.batches):
            count += len(next(it)["index"])
        record["lerobot_samples_per_cpu_s"] = count / (time.process_time() - start)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
