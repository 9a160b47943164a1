"""The training loop, optimizer and schedule, checkpointing and run tracking."""
