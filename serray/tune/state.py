"""What a resumed search may read: checksums of Tune's state files and the search's settings.

``Tuner.restore`` unpickles files from the experiment folder: ``tuner.pkl``, the newest
``experiment_state-*.json`` (JSON with embedded cloudpickle blobs), the searcher's
``searcher-state-*.pkl`` and ``search_gen_state-*.json``, ``callback-states-*.pkl`` and
``basic-variant-state-*.json`` (Tune first copies every top-level ``*.pkl`` and ``*.json``
of the folder to its staging folder and loads the newest of each pattern). A planted file
there runs code. So serray records the SHA-256 of every such file it lets Tune write
(:data:`STATE_RECORD`, signed with a key kept outside the work directory,
:func:`state_key`) and :func:`verify_state` refuses a resume, before Tune reads anything,
when a top-level ``*.pkl``/``*.json`` (other than serray's own two files) is missing from
the record or differs from it.

When the record is written (:mod:`serray.tune.runner`):

* right after ``Tuner(...)`` wrote ``tuner.pkl``;
* each time Tune saves its experiment state (about every second): the hashes of the
  files Tune just wrote to its staging folder are added *before* Tune copies them into the
  experiment folder, and once the copy is done the record keeps only the hashes on disk;
  a kill at any point leaves files whose hashes the record holds;
* after ``fit`` returns.

Per-trial folders are not covered: a resume reads no pickle from them (Tune clears the
error file of a trial it resumes and restarts errored trials afresh; ``params.pkl`` is
only written). Remote storage (``--storage s3://...``) is not verified.

:data:`SEARCH_FILE` holds the settings a search started with (:func:`search_settings`);
:func:`check_resume` refuses a resume with other settings, naming old -> new.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "tuner.pkl").write_bytes(b"state")
    >>> key = d.parent / (d.name + ".key")
    >>> record_files(d, key=key)
    >>> verify_state(d, key=key)
    >>> _ = (d / "tuner.pkl").write_bytes(b"planted")
    >>> try:
    ...     verify_state(d, key=key)
    ... except StateError as exc:
    ...     print(str(exc).split(": ")[1].split(";")[0])
    differs from the checksum serray recorded (changed since Tune wrote it)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from serray import io

__all__ = ["STATE_RECORD", "SEARCH_FILE", "KEY_ENV", "StateError", "state_files", "record_files", "add_pending",
           "settle", "verify_state", "search_settings", "check_resume", "check_settings", "recording", "replaced", "write_search", "state_key"]

log = logging.getLogger(__name__)

#: serray's checksums of Tune's state files, in the experiment folder.
STATE_RECORD = "serray_state.json"
#: The settings the search started with, in the experiment folder.
SEARCH_FILE = "serray_search.json"
#: Where the key that signs :data:`STATE_RECORD` is kept (default ``~/.config/serray/state.key``).
KEY_ENV = "SERRAY_STATE_KEY_FILE"
_OWN = (STATE_RECORD, SEARCH_FILE)


class StateError(ValueError):
    """A resume that would read a file serray did not write, or change the search's settings."""


def state_files(path: Path) -> list[Path]:
    """The files a restore can unpickle: every top-level ``*.pkl`` and ``*.json`` but serray's own."""
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.suffix in (".pkl", ".json") and p.name not in _OWN and p.is_file())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_key(key: Path | None = None) -> bytes:
    """The signing key (created, mode 0600, on first use; :data:`KEY_ENV` names its file)."""
    path = Path(key or os.environ.get(KEY_ENV) or Path.home() / ".config" / "serray" / "state.key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32).hex().encode())
    return path.read_bytes().strip()


def _mac(files: Mapping[str, list[str]], key: Path | None) -> str:
    blob = json.dumps(files, sort_keys=True).encode()
    return hmac.new(state_key(key), blob, hashlib.sha256).hexdigest()


def _read(path: Path, key: Path | None) -> dict[str, list[str]] | None:
    """The record's accepted hashes per file name; ``None`` without a (validly signed) record."""
    rec_path = path / STATE_RECORD
    if not rec_path.exists():
        return None
    rec = io.read_json(rec_path)
    files = {str(k): [str(h) for h in v] for k, v in dict(rec.get("files") or {}).items()}
    if not hmac.compare_digest(str(rec.get("mac", "")), _mac(files, key)):
        return None
    return files


def _write(path: Path, files: Mapping[str, list[str]], key: Path | None) -> None:
    io.write_json({"files": dict(files), "mac": _mac(files, key),
                   "about": "sha256 of the Tune state files serray let Tune write; checked before --resume"},
                  path / STATE_RECORD, checksum=False)  # the HMAC is its integrity check (a forged record is "invalid")


def record_files(path: Path, names: list[str] | None = None, key: Path | None = None) -> None:
    """Record the on-disk hashes of ``names`` (default: every state file) in ``path``."""
    files = _read(path, key) or {}
    for p in state_files(path):
        if names is None or p.name in names:
            files[p.name] = [_sha(p)]
    _write(path, files, key)


def add_pending(path: Path, staging: Path, key: Path | None = None) -> None:
    """Accept the state files Tune just wrote to ``staging`` before it copies them to ``path``."""
    for own in _OWN:  # Tune copied them there on restore; its copy back must not replace the live ones
        (staging / own).unlink(missing_ok=True)
    files = _read(path, key) or {}
    for p in state_files(staging):
        h = _sha(p)
        if h not in files.setdefault(p.name, []):
            files[p.name].append(h)
    _write(path, files, key)


def settle(path: Path, key: Path | None = None) -> None:
    """After Tune's copy: keep, per file, the accepted hashes from the one on disk onwards
    (a hash the record does not accept is never added)."""
    files = _read(path, key) or {}
    for p in state_files(path):
        h = _sha(p)
        if h in files.get(p.name, []):
            files[p.name] = files[p.name][files[p.name].index(h):]
    _write(path, files, key)


def verify_state(path: Path, key: Path | None = None) -> None:
    """Refuse (:class:`StateError`, one line) a resume that would read a state file serray did not record."""
    fix = f"start a new search with --name NEW, or delete {path} to start this one afresh"
    files = _read(path, key)
    if files is None:
        what = "no valid" if not (path / STATE_RECORD).exists() else "an invalid (unsigned or altered)"
        raise StateError(f"{path / STATE_RECORD}: {what} record of Tune's state files, so --resume would unpickle files "
                         f"serray cannot vouch for; {fix}")
    for p in state_files(path):
        if p.name not in files:
            raise StateError(f"{p}: not a file serray let Tune write (not in {STATE_RECORD}); refusing to resume; {fix}")
        if _sha(p) not in files[p.name]:
            raise StateError(f"{p}: differs from the checksum serray recorded (changed since Tune wrote it); "
                             f"refusing to resume; {fix}")


def search_settings(prep: Any, options: Any, objective: str) -> dict[str, Any]:
    """What a search's trial scores depend on: the run's settings
    (:func:`serray.training.identity.run_settings`) plus the search's own."""
    from serray.training.identity import run_settings
    from serray.training.run import config_id

    space = {k: v for k, v in dataclasses.asdict(prep.space).items() if k != "source"}
    out = run_settings(prep.run, prep.exp, prep.spec.name, prep.base, config_id(prep.spec.name, prep.base))
    out.update({
        "seed": int(prep.run.seed), "objective": objective, "num_samples": int(options.num_samples),
        "space": hashlib.sha1(json.dumps(space, sort_keys=True, default=str).encode()).hexdigest()[:10],
        "max_epochs": options.max_epochs, "max_t": int(prep.max_t), "grace_period": int(prep.grace),
        "reduction_factor": int(options.reduction_factor),
    })
    if getattr(options, "scheduler", "asha") != "asha":  # (absent for ASHA: searches started before stay resumable)
        out["scheduler"] = options.scheduler
    return json.loads(json.dumps(out, default=str))


def write_search(path: Path, settings: Mapping[str, Any]) -> None:
    """Write :data:`SEARCH_FILE` (when a search starts)."""
    io.write_json(dict(settings), path / SEARCH_FILE)


def check_resume(path: Path, settings: Mapping[str, Any], key: Path | None = None) -> None:
    """Before Ray starts: refuse a resume with other settings, or of state serray cannot vouch for.

    A resumed search keeps its settings, including ``--num-samples`` (Tune restores the
    trial count it started with), so any difference is refused, naming old -> new.
    """
    verify_state(path, key)
    check_settings(path, settings)


def check_settings(path: Path, settings: Mapping[str, Any]) -> None:
    """Refuse (:class:`StateError`, one line) to continue the search in ``path`` with other
    settings than :data:`SEARCH_FILE` holds (or without that file), naming old -> new."""
    from serray.training.identity import differences

    stored = path / SEARCH_FILE
    if not stored.exists():
        raise StateError(f"{stored}: missing, so the settings this search started with are unknown; "
                         f"start a new search with --name NEW, or delete {path} to start this one afresh")
    diff = differences(io.read_json(stored), settings)
    if diff:
        raise StateError(f"{path}: this search was started with other settings ({'; '.join(diff)}); --resume keeps "
                         "a search's settings: resume with the old values, or start a new search with --name NEW")


@contextlib.contextmanager
def recording(path: Path | None) -> Iterator[None]:
    """While Tune runs: record its state files each time it saves them (module docstring)."""
    if path is None:
        yield
        return
    from ray.tune.execution.tune_controller import TuneController

    # Ray 2.60 offers no public hook between Tune writing its state files to the staging
    # folder and copying them to the experiment folder (the only callback code that runs
    # inside a state save is each Callback's get_state, before the callback-states file is
    # written; on_checkpoint is about trials' checkpoints), so the controller's two
    # methods are wrapped for the block only.
    save, checkpoint = TuneController.save_to_dir, TuneController.checkpoint

    def save_to_dir(self: Any) -> None:
        save(self)
        add_pending(path, Path(self._storage.experiment_driver_staging_path))

    def patched_checkpoint(self: Any, force: bool = False, wait: bool = False) -> None:
        before = self._checkpoint_manager._last_save_time
        checkpoint(self, force=force, wait=wait)
        if self._checkpoint_manager._last_save_time != before:
            try:
                self._storage.syncer.wait()
            except Exception:  # noqa: BLE001 - Tune logs a failed copy itself; the pending hashes stay accepted
                log.warning("Tune's copy of its state to %s failed; its checksums stay pending", path)
                return
            settle(path)

    with replaced(TuneController, save_to_dir=save_to_dir, checkpoint=patched_checkpoint):
        yield


@contextlib.contextmanager
def replaced(cls: type, **attributes: Any) -> Iterator[None]:
    """Set class attributes (e.g. wrapped methods) for the duration of a block, then restore them.

    Example:
        >>> class A:
        ...     def f(self): return 1
        >>> with replaced(A, f=lambda self: 2):
        ...     A().f()
        2
        >>> A().f()
        1
    """
    old = {name: cls.__dict__[name] for name in attributes}
    for name, value in attributes.items():
        setattr(cls, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(cls, name, value)
