"""The checkpoint component: everything that writes, finds, verifies and reads run state on disk.

    manager.py      `CheckpointManager`: saves and restores the Stateful objects of a run
    resume.py       where a run starts from: `resolve_resume` (PATH | auto), `load_weights`
    layout.py       the on-disk tree: names, atomic writes, the completion marker, the pointer
    lock.py         one writer per run directory (`run.lock`)
    weights.py      which model tensors a checkpoint stores; weights-only loading
    compat.py       does a checkpoint fit the run resuming from it; older formats
    state.py        `TrainProgress` and `RNGState`, Stateful objects of every run
    cli.py          `atlas ckpt inspect`

The restricted readers (no file a checkpoint holds can run code) live in `atlas/safeload.py`
and the fingerprints of frozen weights in `atlas/models/fingerprint.py`, below this package.

Nothing is imported here so that `atlas ckpt inspect` (layout + cli) starts without torch.
"""
