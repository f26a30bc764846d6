"""Corpus adapters: turn a corpus's own folder layout into a manifest.

One module per corpus (``emodb``, ``emovo``, ``ravdess``, ``iemocap``, ``cremad``,
``tess``, ``cafe``, ``msppodcast``) plus ``table`` for any CSV/Parquet table with the manifest columns
and ``audformat`` for a database in audformat (as audb distributes corpora).
:func:`prepare_corpus` runs one, checks every audio file and writes
``W/manifests/<name>.parquet``; :mod:`serray.corpora.info` summarises manifests.

Example:
    >>> adapter_names()
    ['emodb', 'emovo', 'ravdess', 'iemocap', 'cremad', 'tess', 'cafe', 'msppodcast', 'table', 'audformat']
"""

from serray.corpora.base import (
    Adapter,
    CorpusLayoutError,
    PrepareResult,
    Scan,
    adapter_names,
    get_adapter,
    prepare_corpus,
)

__all__ = ["Adapter", "CorpusLayoutError", "PrepareResult", "Scan", "adapter_names", "get_adapter", "prepare_corpus"]
