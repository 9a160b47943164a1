"""Evaluation: offline metrics on held-out episodes and closed-loop LIBERO rollouts."""
