"""Atomic checkpoints: a JSON header and Equinox-serialised leaves in one file."""

import json
import os
import pathlib
import tempfile
from typing import Any

import equinox as eqx
from jaxtyping import PyTree


_MAGIC = b"cfconv-checkpoint-v1\n"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write a file atomically: `write(f)` fills a temporary file in the same folder,
    which is flushed, synced and renamed over `path` (a crash leaves the old file)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    # Make the rename itself durable (where the platform allows syncing a folder).
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, metadata: dict[str, Any]) -> None:
    """Save `tree` (any PyTree of arrays: model, kernel states, optimizer state, PRNG key
    data) and JSON-serialisable `metadata`, atomically.

    **Arguments:**

    - `path`: the checkpoint file; its folder is created if needed.
    - `tree`: the PyTree to save (`equinox.tree_serialise_leaves`).
    - `metadata`: a JSON-serialisable dict, e.g. the run's configuration and step; read it
      back with [`cfconv.train.load_metadata`][] to rebuild the template for loading.
    """
    header = json.dumps(metadata, sort_keys=True).encode()

    def write(f):
        f.write(_MAGIC)
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        eqx.tree_serialise_leaves(f, tree)

    atomic_write(path, write)


def _read_header(f, path) -> dict[str, Any]:
    if f.read(len(_MAGIC)) != _MAGIC:
        raise ValueError(f"`path` is not a cfconv checkpoint: {path}")
    size = int.from_bytes(f.read(8), "little")
    return json.loads(f.read(size))


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the metadata of a checkpoint written by [`cfconv.train.save_checkpoint`][]."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`path` is not a checkpoint file: {path}")
    with open(path, "rb") as f:
        return _read_header(f, path)


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Load a checkpoint into a PyTree of the same structure as `like`.

    **Arguments:**

    - `path`: a file written by [`cfconv.train.save_checkpoint`][].
    - `like`: a PyTree with the structure, shapes and dtypes of the saved one (e.g. a
      freshly initialised model, states and optimizer state).

    **Returns:**

    `(tree, metadata)`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`path` is not a checkpoint file: {path}")
    with open(path, "rb") as f:
        metadata = _read_header(f, path)
        tree = eqx.tree_deserialise_leaves(f, like)
    return tree, metadata
