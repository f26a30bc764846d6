"""Duplicate audio in a manifest: the same file, or identical bytes, under several rows.

Two manifest rows hold the same audio when their ``path`` values resolve to the same file
(symlinks and ``..`` followed) or when the files have identical content (a copy listed
under a second corpus or speaker id). :func:`audio_keys` gives every row a key that is
equal exactly for such rows; :func:`duplicate_audio` lists the groups (``serray data
info`` prints them) and :func:`serray.protocols.check_leakage` refuses folds that put
copies on both sides of train/test or validation/test.

Why hash at check time, and why it stays cheap: the manifest has no content hash, and
adding one at preparation would force every existing work directory to be prepared
again. Instead, files are first grouped by size (one ``stat`` each); only files that
share their size with another file can be byte-identical, and only those are hashed
(BLAKE2b of the whole file, so equal keys mean equal bytes, not a lucky prefix). Digests
are cached in-process by (resolved path, size, mtime), so the second check of the same
manifest (``make_folds`` and again before training) costs only the ``stat`` calls, and a
file changed on disk is hashed again. :func:`use_digest_store` (called by
:func:`serray.manifest.load_manifests`) also keeps them in
``W/cache/audio_digests.parquet``, so later commands on the same work directory hash
nothing (EmoDB's copy here has 535 files of one size: 0.4 s of a 2.2 s `serray train
svm`). Rows whose file does not exist (e.g. hand-made manifests in tests) are compared
by resolved path only.

Example:
    >>> import pandas as pd, tempfile, os, shutil
    >>> d = tempfile.mkdtemp()
    >>> for name in ("a.wav", "b.wav"):
    ...     with open(os.path.join(d, name), "wb") as fh:
    ...         _ = fh.write(b"RIFF" + bytes(name, "ascii") * 100)
    >>> shutil.copy(os.path.join(d, "a.wav"), os.path.join(d, "copy.wav")) and None
    >>> m = pd.DataFrame({"utt_id": ["x_a", "x_b", "y_a"], "corpus": ["x", "x", "y"],
    ...                   "speaker": ["x_1", "x_1", "y_1"],
    ...                   "path": [os.path.join(d, f) for f in ("a.wav", "b.wav", "copy.wav")]})
    >>> duplicate_audio(m)["utt_id"].tolist()
    ['x_a', 'y_a']
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from typing import Any

import pandas as pd

from serray.workdir import Workdir

__all__ = ["audio_keys", "duplicate_audio", "use_digest_store"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: (resolved path, size, mtime_ns) -> hex digest; see the module docstring.
_DIGESTS: dict[tuple[str, int, int], str] = {}
#: Where new digests are persisted (:func:`use_digest_store`), and the stores already read.
_STORE: dict[str, Any] = {"path": None, "loaded": set()}


def use_digest_store(workdir: str | os.PathLike) -> None:
    """Read ``W/cache/audio_digests.parquet`` into the in-process cache (once per file)
    and write new digests there from now on. An unreadable store is ignored (logged)
    and rewritten; its entries are keyed by (path, size, mtime), so a changed file is
    hashed again.
    """
    path = Workdir(workdir).audio_digests
    _STORE["path"] = path
    if str(path) in _STORE["loaded"] or not path.exists():
        return
    _STORE["loaded"].add(str(path))
    try:
        df = pd.read_parquet(path)
        for p, size, mtime, digest in zip(df["path"], df["size"], df["mtime_ns"], df["digest"]):
            _DIGESTS.setdefault((str(p), int(size), int(mtime)), str(digest))
    except Exception as exc:  # noqa: BLE001 - a cache: recompute rather than fail
        log.warning("%s: unreadable audio-digest cache (%s); it will be rewritten", path, exc)


def _save_digests() -> None:
    from serray import io

    path = _STORE["path"]
    if path is None:
        return
    rows = [(p, size, mtime, d) for (p, size, mtime), d in _DIGESTS.items()]
    try:
        io.write_parquet(pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "digest"]), path)
    except OSError as exc:  # a read-only work directory: digests stay in this process
        log.debug("cannot write %s (%s)", path, exc)


def _hash_file(path: str) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _digest(path: str, size: int, mtime_ns: int) -> str:
    """BLAKE2b of the file's bytes, cached by (path, size, mtime_ns)."""
    key = (path, size, mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path)
    return _DIGESTS[key]


def _stat(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file, ``None`` when it is missing or unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if os.path.isfile(path) else None


def audio_keys(paths: pd.Series) -> pd.Series:
    """One key per row, equal exactly for rows holding the same audio.

    Args:
        paths: Audio file paths (the manifest's ``path`` column), any index.

    Returns:
        Keys aligned with ``paths``: ``"sha:<digest>"`` for files that share their size
        with another file, otherwise ``"path:<resolved path>"``.
    """
    resolved = {p: os.path.realpath(p) for p in pd.unique(paths.astype(str))}
    stats = {r: _stat(r) for r in set(resolved.values())}
    by_size: dict[int, list[str]] = defaultdict(list)
    for r, st in stats.items():
        if st is not None:
            by_size[st[0]].append(r)
    key_of = {r: f"path:{r}" for r in stats}
    known = len(_DIGESTS)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for r in same_size:
                try:
                    key_of[r] = "sha:" + _digest(r, *stats[r])
                except OSError as exc:  # vanished or unreadable since the stat: compare by path
                    log.debug("cannot hash %s (%s); comparing it by path only", r, exc)
    if len(_DIGESTS) > known:
        _save_digests()
    return paths.astype(str).map(lambda p: key_of[resolved[p]])


def duplicate_audio(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows whose audio also appears under another row.

    Args:
        manifest: Manifest with ``utt_id`` and ``path`` (``corpus`` and ``speaker``
            are copied to the output when present).

    Returns:
        Columns ``group`` (0, 1, ... per set of copies), ``utt_id``, ``corpus``,
        ``speaker``, ``path``, sorted by group then ``utt_id``; empty without duplicates
        or without a ``path`` column.
    """
    cols = ["group", "utt_id", "corpus", "speaker", "path"]
    if "path" not in manifest.columns or manifest.empty:
        return pd.DataFrame(columns=cols)
    df = manifest.reindex(columns=["utt_id", "corpus", "speaker", "path"]).astype(object)
    df["_key"] = audio_keys(manifest["path"]).to_numpy()
    df = df[df["_key"].duplicated(keep=False)]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(utt_id=df["utt_id"].astype(str)).sort_values("utt_id", kind="stable")
    first = df.groupby("_key", sort=False)["utt_id"].transform("first")
    order = {u: i for i, u in enumerate(sorted(set(first)))}
    df["group"] = first.map(order).astype("int64")
    return df.sort_values(["group", "utt_id"], kind="stable")[cols].reset_index(drop=True)
