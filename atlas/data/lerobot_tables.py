"""The parquet tables of a LeRobotDataset v3.0 folder, written with the types `lerobot` writes.

data/chunk-*/file-*.parquet       vectors as fixed_size_list<float32>, images as
                                  struct<bytes: binary, path: string>, int64 indices
meta/tasks.parquet                task_index, task (pandas index metadata: `task`)
meta/episodes/chunk-*/file-*.parquet
                                  one row per episode (see lerobot_meta)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_INT_COLUMNS = ("frame_index", "episode_index", "index", "task_index")


def write_data_file(path: Path, rows: list[dict[str, Any]], image_keys: Sequence[str]) -> None:
    """Rows {image keys, observation.state, action, timestamp, indices} -> one data parquet."""
    columns: dict[str, pa.Array] = {}
    for key in image_keys:
        columns[key] = pa.array([r[key] for r in rows], type=_IMAGE)
    for key in ("observation.state", "action"):
        values = np.stack([r[key] for r in rows]).astype(np.float32)
        flat = pa.array(values.reshape(-1), type=pa.float32())
        columns[key] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    columns["timestamp"] = pa.array([r["timestamp"] for r in rows], type=pa.float32())
    for key in _INT_COLUMNS:
        columns[key] = pa.array([r[key] for r in rows], type=pa.int64())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Small row groups: a random image read decodes one group of this many rows, not the file.
    pq.write_table(pa.table(columns), path, row_group_size=256 if image_keys else 100_000)


def write_tasks(path: Path, tasks: Sequence[str]) -> None:
    """meta/tasks.parquet: task_index and task, with `task` marked as the pandas index."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": list(tasks)})
    pandas = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
    }
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_episodes(path: Path, episodes: list[dict[str, Any]]) -> None:
    """meta/episodes/chunk-000/file-000.parquet from one dict of columns per episode."""
    columns: dict[str, pa.Array] = {}
    for name in episodes[0]:
        values = [ep[name] for ep in episodes]
        if name == "tasks":
            columns[name] = pa.array(values, type=pa.list_(pa.string()))
        elif isinstance(values[0], float):
            columns[name] = pa.array(values, type=pa.float64())
        else:
            columns[name] = pa.array(values, type=pa.int64())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
