"""Atomic file writes and small serialisation helpers.

Every file serray writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and then renamed over the destination, so an
interrupted run never leaves a half-written file behind. The final file gets the mode a
plain ``open()`` would give it (``0o666`` minus the process umask), not the ``0o600`` of
the temporary file, so the other users of a shared work directory can read it.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json({"a": 1}, d / "x.json")
    >>> read_json(d / "x.json")
    {'a': 1}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "atomic_path",
    "write_bytes",
    "write_text",
    "write_json",
    "read_json",
    "write_yaml",
    "read_yaml",
    "write_parquet",
    "read_parquet",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. The
    renamed file's mode follows the umask (see :func:`_umask`), as ``open()`` would.

    Args:
        path: Final destination.
        suffix: Suffix for the temporary file (some writers infer the format from it).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and
    restoring it (``os.umask`` has no read-only form).
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars become Python numbers)."""
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Atomically write ``obj`` as YAML (block style, key order kept)."""
    import yaml

    write_text(yaml.safe_dump(_plain(obj), sort_keys=False), path)


def read_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def write_parquet(df: "pandas.DataFrame", path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:  # noqa: F821
    """Atomically write a DataFrame as Parquet, with optional key/value schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> "pandas.DataFrame":  # noqa: F821
    """Read a Parquet file into a DataFrame."""
    import pandas as pd

    return pd.read_parquet(path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain Python for YAML."""
    import numpy as np

    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
