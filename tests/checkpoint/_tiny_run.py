"""A tiny real training config (debug-size VGGT, MiniLM, 2 optimizer steps) for CLI-level tests."""

from __future__ import annotations

from pathlib import Path

CONFIG = """
model:
  vggt: {{preset: tiny, layers: [-1]}}
  language_encoder: {{name_or_path: minilm, pooling: mean, dtype: fp32}}
  geometry: {{tokens_per_frame: 4}}
  fusion: {{dim: 32, depth: 1, num_heads: 4, dropout: 0.1}}
  action_head: {{chunk_size: 2, hidden_dim: 32}}
data:
  paths: [{data}]
  synthetic: {{tasks: 2, demos: 3, steps: 8, image_size: 32}}
  cameras: [agentview_rgb]
  image_size: 28
  batch_size: 2
  num_workers: 0
  pin_memory: false
  val_split: 0.2
training: {{max_steps: {steps}, warmup_steps: 1, log_interval: 1, val_interval: 1000}}
checkpoint: {{save_dir: {save_dir}, save_interval: 2}}
logging: {{tensorboard: false, progress: false}}
"""


def tiny_config(save_dir: Path, data: Path, steps: int = 2) -> Path:
    """Write `<save_dir>.yaml` training into `save_dir` on the synthetic set in `data`."""
    path = save_dir.with_name(save_dir.name + ".yaml")
    path.write_text(CONFIG.format(data=data, save_dir=save_dir, steps=steps))
    return path
