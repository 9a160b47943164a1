"""Reading pickle-based files without letting them run code.

A pickle names Python callables (globals) that the unpickler imports and calls: a crafted file
runs whatever it names (`os.system`, ...) the moment it is read. Checkpoints are shared and
downloaded, and their checksums are no defence (whoever crafts the folder recomputes them), so
every pickle-based file AtlasVLA reads goes through one of two restricted readers:

    *.pt            `load_pt`: torch.load(weights_only=True): tensors and plain containers, plus
                    the globals a strategy declares (`Strategy.pickle_globals`), resolved to
                    inert stand-ins when only screening
    dcp/.metadata   `load_dcp_metadata`: an unpickler that admits only the classes of DCP's
                    sharded-checkpoint metadata (`DCP_METADATA_GLOBALS`)

`SafeFileSystemReader` and `SafeLoadPlanner` put these under `torch.distributed.checkpoint`:
DCP itself unpickles `.metadata` and its non-tensor items without restriction. Libraries that
load with a full unpickler (DeepSpeed's `load_checkpoint`) only see files `screen` admitted.
A refused file raises `UnsafeFileError` naming the file and the global; nothing in it ran.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

# Everything DCP's .metadata pickles (torch 2.4 - 2.13): its dataclasses, torch.Size, the
# tensor properties' dtype / layout / memory format, and the relative paths of the shard files.
DCP_METADATA_GLOBALS = frozenset(
    {
        "torch.distributed.checkpoint.metadata.Metadata",
        "torch.distributed.checkpoint.metadata.MetadataIndex",
        "torch.distributed.checkpoint.metadata.StorageMeta",
        "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
        "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
        "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
        "torch.distributed.checkpoint.metadata.TensorProperties",
        "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
        "torch.distributed.checkpoint.filesystem._StorageInfo",
        "torch.serialization._get_layout",
        "torch.Size",
        "pathlib.PosixPath",
        "pathlib.PurePosixPath",
        "collections.OrderedDict",
    }
)
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


class RefusedFileError(RuntimeError):
    """A file AtlasVLA was asked to load was not read; the message names it and says why."""


class UnsafeFileError(RefusedFileError):
    """A file would need a Python global outside the allowed set to load: it was refused."""

    def __init__(self, file: Path, problem: str) -> None:
        super().__init__(
            f"{file}: refused to load, {problem}. Only tensors and plain data are read from "
            "checkpoints (a pickle that names other code could run it); nothing in the file ran"
        )
        self.file = file


class UnreadableFileError(RefusedFileError):
    """A file is not what its name says (truncated, garbage, another format)."""

    def __init__(self, file: Path, problem: str) -> None:
        super().__init__(f"{file}: not a readable checkpoint file ({problem})")
        self.file = file


class _Inert:
    """Stands in for a declared global while screening: takes any arguments, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _refusal(file: Path, exc: BaseException) -> RefusedFileError:
    text = " ".join(str(exc).split())
    found = _GLOBAL_RE.search(text)
    if found:
        return UnsafeFileError(file, f"it names the Python global {found.group(1)}")
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        detail = text.split("error:", 1)[-1].split(" Check the ")[0].strip()
        return UnsafeFileError(file, f"torch.load(weights_only=True) refused it: {detail[:200]}")
    return UnreadableFileError(file, f"{type(exc).__name__}: {text[:200]}")


@contextmanager
def _allowed(names: Iterable[str], real: bool) -> Iterator[None]:
    """Admit `names` for torch.load(weights_only=True): the real objects, or inert stand-ins."""
    entries: list[Any] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        entries.append(getattr(importlib.import_module(module), attr) if real else (_Inert, name))
    with torch.serialization.safe_globals(entries):
        yield


def load_pt(file: Path, *, extra_globals: Iterable[str] = (), screen_only: bool = False) -> Any:
    """torch.load(`file`, weights_only=True) on the CPU, admitting `extra_globals` besides
    tensors and plain containers; `screen_only` resolves them to stand-ins and memory-maps the
    tensors (cheap: only the pickle is read). Raises `UnsafeFileError` / `UnreadableFileError`."""
    if not file.is_file():
        raise UnreadableFileError(file, "not a file" if file.exists() else "missing")
    with _allowed(extra_globals, real=not screen_only):
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=screen_only)
        except RuntimeError as exc:
            if not screen_only or "mmap" not in str(exc):
                raise _refusal(file, exc) from None
        except Exception as exc:  # UnpicklingError, EOFError, ValueError: bad bytes
            raise _refusal(file, exc) from None
        try:  # a legacy (non-zip) file cannot be memory-mapped: read it whole
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _refusal(file, exc) from None


def screen(directory: Path, extra_globals: Iterable[str] = ()) -> None:
    """Refuse `directory` if any pickle-based file in it names a global outside the allowed
    sets: every `*.pt` (with `extra_globals`, as stand-ins) and every DCP `.metadata`. Reads the
    pickles only (tensors are memory-mapped, not read): run it before a library that unpickles
    without restriction sees the folder."""
    extra = tuple(extra_globals)
    for file in sorted(directory.rglob("*.pt")):
        load_pt(file, extra_globals=extra, screen_only=True)
    for file in sorted(directory.rglob(".metadata")):
        load_dcp_metadata(file)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in DCP_METADATA_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)  # a tensor's dtype is pickled as the global torch.<dtype>
        raise pickle.UnpicklingError(f"GLOBAL {full} is not part of DCP metadata")


def load_dcp_metadata(file: Path, stream: IO[bytes] | None = None) -> Metadata:
    """DCP's `.metadata`, unpickled admitting only `DCP_METADATA_GLOBALS` (and dtypes)."""
    try:
        if stream is None:
            with open(file, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        else:
            metadata = _MetadataUnpickler(stream).load()
    except OSError as exc:
        raise UnreadableFileError(file, str(exc)) from None
    except Exception as exc:
        raise _refusal(file, exc) from None
    if not isinstance(metadata, Metadata):
        raise UnreadableFileError(file, f"holds a {type(metadata).__name__}, not DCP metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with `.metadata` read by `load_dcp_metadata` instead of pickle.load."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self._get_metadata_path(kwargs.get("rank")))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = load_dcp_metadata(path, stream)
        if getattr(metadata, "storage_meta", None) is None:  # as FileSystemReader does
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's load planner with non-tensor items (optimizer hyper-parameters, step counts) read
    by torch.load(weights_only=True): DCP's own planner unpickles them without restriction."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _refusal(self.directory / f"{fqn} (an item of the DCP shards)", exc) from None
        # What DefaultLoadPlanner.load_bytes does with the object it unpickled itself.
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj
