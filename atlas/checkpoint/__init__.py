"""The checkpoint component: everything that writes, finds, verifies and reads run state on disk.

    manager.py   `CheckpointManager`: saves and restores the Stateful objects of a run
    layout.py    the on-disk tree: names, atomic writes, the completion marker, verification
    weights.py   which model tensors a checkpoint stores; fingerprints of the frozen ones
    compat.py    does a checkpoint fit the run resuming from it (batch split, config)
    state.py     `TrainProgress` and `RNGState`, the Stateful objects the manager adds itself
    cli.py       `atlas ckpt inspect`

Nothing is imported here so that `atlas ckpt inspect` (layout + cli only) stays free of torch.
"""
