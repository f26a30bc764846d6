"""Checksums and the code-free rule of kept-model folders.

Every kept fold model and every export lists its files with their sha256
(:func:`sha256`); loading checks them (:func:`check_files`) and refuses any file whose
kind would execute code when loaded (pickles, torch checkpoints, joblib, Python), with
one line naming the file.

Example:
    >>> refuse_code_files.__name__
    'refuse_code_files'
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

__all__ = ["CODE_SUFFIXES", "ArtifactError", "sha256", "check_files", "refuse_code_files"]

#: File kinds that run code when loaded (``pickle``/``torch.load``/joblib/Python): never in a kept model.
CODE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".bin", ".py", ".pyc", ".so", ".npy_pickle", ".dill")


class ArtifactError(ValueError):
    """A kept model or export that cannot be loaded (one line naming the file)."""


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def refuse_code_files(folder: Path) -> None:
    """Raise :class:`ArtifactError` for the first file under ``folder`` that would execute code on load."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix.lower() in CODE_SUFFIXES:
            raise ArtifactError(f"{path}: a {path.suffix} file can execute code when loaded; kept models hold only "
                                f"safetensors, npz and JSON files (remove it, or re-export)")


def check_files(folder: Path, files: Mapping[str, str]) -> None:
    """Check each listed file (path relative to ``folder`` -> sha256) exists and matches.

    Raises:
        ArtifactError: A missing file or a checksum mismatch, naming the file.
    """
    for rel, digest in files.items():
        path = Path(folder) / rel
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the kept model's checksums but missing; re-export or restore it")
        got = sha256(path)
        if got != digest:
            raise ArtifactError(f"{path}: checksum mismatch (sha256 {got[:12]}..., expected {digest[:12]}...); "
                                f"the file was changed or damaged; re-export it")
