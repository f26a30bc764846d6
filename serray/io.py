"""Atomic file writes and small serialisation helpers.

Every file serray writes goes through :func:`atomic_path`: the content is written to a
temporary file in the destination folder and then renamed over the destination, so an
interrupted run never leaves a half-written file behind. The final file gets the mode a
plain ``open()`` would give it (``0o666`` minus the process umask), not the ``0o600`` of
the temporary file, so the other users of a shared work directory can read it.

Every read names its file when the content cannot be parsed (:class:`CorruptFileError`,
a ``ValueError``): a truncated or damaged file is reported with its path and the fix.
YAML that serray writes (best.yaml, nested.yaml) starts with :data:`YAML_HEADER` and
ends with :data:`YAML_END`; :func:`read_yaml` refuses a file that starts with the header
but lacks the end line (a file cut short). Hand-written YAML without the header is read
as it is.

Files whose bytes must not change unnoticed are written with ``checksum=True``: cached
features and predictions parts, and every JSON, YAML and Parquet file serray writes
through :func:`write_json`, :func:`write_yaml` and :func:`write_parquet` (run and trial
records, settings, manifests, best.yaml, leaderboards, summaries): a sidecar ``<file>.sha256`` (the ``sha256sum`` format,
so ``sha256sum -c`` checks it too) is written before the file is renamed into place, and
:func:`verify_checksum` (run by :func:`read_parquet` and the feature cache before every
read, and by :func:`read_json` and :func:`read_yaml`) refuses a file whose bytes differ,
naming it. A file without a sidecar (written before checksums existed, or by hand) is read
unverified; a file serray wrote that was edited by hand on purpose is used again once its
sidecar is deleted (the error says so). A file written without a checksum loses any
sidecar an earlier version had.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json({"a": 1}, d / "x.json")
    >>> read_json(d / "x.json")
    {'a': 1}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

__all__ = [
    "CorruptFileError",
    "YAML_HEADER",
    "YAML_END",
    "atomic_path",
    "write_bytes",
    "write_text",
    "write_json",
    "read_json",
    "write_yaml",
    "read_yaml",
    "write_parquet",
    "read_parquet",
    "CHECKSUM_SUFFIX",
    "checksum_path",
    "file_sha256",
    "verify_checksum",
    "remove_file",
]

log = logging.getLogger(__name__)

#: Suffix of the sidecar that holds a file's SHA-256 (``<file>.sha256``).
CHECKSUM_SUFFIX = ".sha256"


#: First line of every YAML file serray writes; a file that starts with it must end with :data:`YAML_END`.
YAML_HEADER = "# written by serray; the last line marks the end of the file (a file without it is incomplete)"
#: Last line of every YAML file serray writes.
YAML_END = "# end of file (serray)"


class CorruptFileError(ValueError):
    """A stored file that cannot be read (truncated or damaged); the message names the file and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str | None = None):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}; {fix or 'delete it and re-run the command that writes it'}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", checksum: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched. The
    renamed file's mode follows the umask (see :func:`_umask`), as ``open()`` would.

    Args:
        path: Final destination.
        suffix: Suffix for the temporary file (some writers infer the format from it).
        checksum: Also write the sidecar ``<path>.sha256`` (:func:`checksum_path`) with the
            SHA-256 of the written bytes, before the file is renamed into place (so a file
            in place never lacks its checksum; an interruption in between leaves a
            checksum that the old file, if any, fails: it counts as damaged). The two
            renames hold an exclusive ``flock`` on the folder, so two processes writing
            the same file never leave one's checksum beside the other's bytes, and a
            reader that sees a mismatch checks again under a shared lock
            (:func:`verify_checksum`).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        if checksum:
            digest = file_sha256(tmp_path)
            with _folder_lock(dest.parent, exclusive=True):  # two writers of one file never cross their pairs
                write_text(f"{digest}  {dest.name}\n", checksum_path(dest))
                os.replace(tmp_path, dest)
        else:
            checksum_path(dest).unlink(missing_ok=True)  # an earlier version's checksum no longer holds
            os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """An advisory ``flock`` on ``folder`` (exclusive for writing a file and its checksum,
    shared for re-reading the pair); a no-op where the OS has no ``flock``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("%s: cannot lock (%s); going on without the lock", folder, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError as exc:  # e.g. a file system without flock on folders
            log.debug("%s: cannot lock (%s); going on without the lock", folder, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def checksum_path(path: str | os.PathLike) -> Path:
    """The sidecar holding the SHA-256 of ``path``: ``<path>.sha256``."""
    return Path(f"{os.fspath(path)}{CHECKSUM_SUFFIX}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike, fix: str | None = None) -> bool:
    """Check ``path``'s bytes against its sidecar checksum (:func:`checksum_path`).

    Returns:
        ``True`` when they match; ``False`` when the file has no sidecar (written before
        checksums existed: read unverified, logged at debug level).

    Raises:
        CorruptFileError: The bytes differ from the checksum written with them (or the
            sidecar is unreadable); the message names the file and ``fix``.
    """
    side = checksum_path(path)
    want = _stored_digest(path, fix)
    if want is None:
        log.debug("%s: no checksum (written before checksums); read unverified", path)
        return False
    if file_sha256(path) == want:
        return True
    with _folder_lock(Path(path).parent, exclusive=False):  # a writer may have been between the two renames
        if file_sha256(path) == _stored_digest(path, fix):
            return True
    raise CorruptFileError(path, f"damaged: its bytes do not match the checksum written with it ({side})", fix)


def _stored_digest(path: str | os.PathLike, fix: str | None) -> str | None:
    """The SHA-256 in ``path``'s sidecar (``None`` without one).

    Raises:
        CorruptFileError: The sidecar is unreadable or holds no SHA-256.
    """
    side = checksum_path(path)
    try:
        text = side.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"its checksum file {side} is unreadable ({exc})", fix) from None
    want = text.split()[0].lower() if text.split() else ""
    if len(want) != 64:
        raise CorruptFileError(path, f"its checksum file {side} is damaged (no SHA-256 in it)", fix)
    return want


def remove_file(path: str | os.PathLike) -> None:
    """Delete ``path`` and its checksum sidecar (either may be absent)."""
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


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


def write_text(text: str, path: str | os.PathLike, checksum: bool = False) -> None:
    """Atomically write ``text`` (UTF-8) to ``path`` (with ``checksum``, and its sidecar)."""
    with atomic_path(path, checksum=checksum) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | os.PathLike, checksum: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars become Python numbers),
    with its checksum sidecar unless ``checksum=False``."""
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path, checksum=checksum)


def _edited_fix(path: str | os.PathLike, fix: str | None) -> str:
    """The fix of a checksum mismatch of a text file a user may have edited on purpose."""
    return (f"if you edited it by hand on purpose, delete {checksum_path(path)} to use it as it is; otherwise "
            + (fix or "delete it and re-run the command that writes it"))


def read_json(path: str | os.PathLike, fix: str | None = None) -> Any:
    """Read a JSON file.

    Raises:
        CorruptFileError: The file is not valid JSON (e.g. truncated); the message names
            it and ``fix`` (default: delete it and re-run the command that writes it).
    """
    verify_checksum(path, _edited_fix(path, fix))
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, f"not valid JSON, the file is truncated or damaged ({exc})", fix) from None


#: Floats of YAML 1.2 that PyYAML's YAML 1.1 resolver leaves as text: no dot (``5e-4``,
#: ``1e3``) or no exponent sign (``1.5e3``).
_EXPONENT_FLOAT = r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"


@functools.lru_cache(maxsize=None)
def _yaml_loader_dumper() -> tuple[type, type]:
    """``yaml.SafeLoader`` / ``yaml.SafeDumper`` subclasses that also resolve
    :data:`_EXPONENT_FLOAT` as a float (so the dumper quotes text that looks like one)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    class Dumper(yaml.SafeDumper):
        pass

    for cls in (Loader, Dumper):
        cls.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_EXPONENT_FLOAT), list("-+0123456789."))
    return Loader, Dumper


def load_yaml(text: str) -> Any:
    r"""Parse YAML text as plain data (``yaml.safe_load``), reading exponent notation as
    YAML 1.2 does: ``5e-4`` is a number, where PyYAML alone gives the text ``'5e-4'``.
    serray's one YAML parser (files, ``--set`` values, search spaces).

    Example:
        >>> load_yaml("lr: 5e-4\ngrid: [1e3, 0.1]\nname: e5")
        {'lr': 0.0005, 'grid': [1000.0, 0.1], 'name': 'e5'}

    Raises:
        yaml.YAMLError: ``text`` is not valid YAML.
    """
    import yaml

    return yaml.load(text, Loader=_yaml_loader_dumper()[0])  # noqa: S506  (a SafeLoader subclass)


def write_yaml(obj: Any, path: str | os.PathLike, checksum: bool = True) -> None:
    """Atomically write ``obj`` as YAML (block style, key order kept), between
    :data:`YAML_HEADER` and :data:`YAML_END`, with its checksum sidecar unless ``checksum=False``.
    Text that :func:`load_yaml` would read as a number (``'1e3'``) is quoted."""
    import yaml

    text = yaml.dump(_plain(obj), Dumper=_yaml_loader_dumper()[1], sort_keys=False)
    write_text(f"{YAML_HEADER}\n{text}{YAML_END}\n", path, checksum=checksum)


def read_yaml(path: str | os.PathLike, fix: str | None = None) -> Any:
    """Read a YAML file (only plain data: :func:`load_yaml`).

    Raises:
        CorruptFileError: The file does not parse, or it was written by serray (starts
            with :data:`YAML_HEADER`, or a part of it) and lacks :data:`YAML_END`: it was
            cut short. The message names the file, the line and ``fix``.
    """
    import yaml

    verify_checksum(path, _edited_fix(path, fix))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(path, f"not UTF-8 text ({exc})", fix) from None
    lines = text.rstrip("\n").split("\n")
    if len(text) >= 3 and (lines[0] == YAML_HEADER or YAML_HEADER.startswith(text)) and lines[-1] != YAML_END:
        raise CorruptFileError(
            path, f"incomplete: written by serray but its last line ({len(lines)}: {lines[-1][:40]!r}) is not the end "
                  f"marker {YAML_END!r}, so the file was cut short", fix)
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise CorruptFileError(path, f"not valid YAML ({' '.join(str(exc).split())})", fix or "fix or re-create it") from None


def write_parquet(df: "pandas.DataFrame", path: str | os.PathLike, metadata: Mapping[str, str] | None = None,  # noqa: F821
                  checksum: bool = True) -> None:
    """Atomically write a DataFrame as Parquet, with optional key/value schema metadata
    (and with ``checksum``, its sidecar checksum: see :func:`atomic_path`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): str(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path, suffix=".parquet", checksum=checksum) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike, fix: str | None = None, **kwargs: Any) -> "pandas.DataFrame":  # noqa: F821
    """Read a Parquet file into a DataFrame (``kwargs`` go to ``pandas.read_parquet``),
    after checking its bytes against its checksum when it has one (:func:`verify_checksum`).

    Raises:
        CorruptFileError: The file is not readable Parquet (truncated or damaged), or its
            bytes do not match its checksum.
    """
    import pandas as pd
    import pyarrow as pa

    try:
        verify_checksum(path, fix)
        return pd.read_parquet(path, **kwargs)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptFileError(path, f"not readable Parquet, the file is truncated or damaged ({exc})", fix) from None


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
