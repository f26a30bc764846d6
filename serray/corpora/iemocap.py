"""IEMOCAP (Interactive Emotional Dyadic Motion Capture), English, dyadic sessions.

Official layout: ``SessionN/sentences/wav/<dialog>/<utt>.wav`` with labels in
``SessionN/dialog/EmoEvaluation/<dialog>.txt``, one block per utterance::

    [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
    C-E2:\tNeutral;\t()
    ...
    A-E3:\tval 3; act 2; dom  2;\t()
    A-F1:\tval 3; act 2; dom  1;\t()

The first line holds the consensus label (``neu hap sad ang exc fru fea sur dis oth``;
``xxx`` = no agreement, dropped and counted in the log unless ``keep_unagreed``) and the
mean (valence, activation, dominance) ratings; the ``C-*`` lines are the individual
evaluators' categorical labels, from which ``agreement`` (share of evaluators naming the
consensus label) is computed; the ``A-*`` lines are the individual evaluators'
dimensional ratings. The external evaluators (``A-E*``, whose ratings the mean on the
first line averages) give ``valence_ratings``; the actors' own ratings (``A-F*``,
``A-M*``) give ``valence_ratings_actors``. Both are ``;``-separated in file order (``""``
without any) and are what label set ``valence3`` (paper 000: per-rating bins, majority
vote; :func:`serray.labels.majority_valence_bin`) reads ``valence_ratings`` from. ``root`` is the folder holding ``Session1 ... Session5`` (or a folder
up to two levels above it, e.g. the one holding ``IEMOCAP_full_release``).

The utterance's speaker is its session plus the letter that starts the part after the
last underscore (``Ses01F_impro01_M003`` -> speaker ``Ses01_M``, gender m). ``excited``
stays ``excited`` (label set ``4class`` merges it into ``happy``); ``frustrated`` and
``other`` are kept as such.

Extra columns: ``emotion_native`` (the code), ``session`` (``Ses01``), ``dialog``,
``improvised`` (bool), ``method`` (``impro``/``script``), ``valence``, ``arousal``
(activation), ``dominance`` (1-5 scales, the external evaluators' means),
``valence_ratings``, ``valence_ratings_actors``, ``naturalness`` (``natural`` for the
improvised dialogues, ``acted`` for the scripted ones, as paper 002 splits IEMOCAP into
IN and IA), ``agreement``, ``n_raters``, ``start_s``,
``end_s``, and ``text`` when ``SessionN/dialog/transcriptions`` is present.

Options:
    min_agreement: Keep only utterances whose agreement is at least this (0-1).
    labels: Keep only these labels (canonical names, list or comma-separated), e.g.
        ``neutral,happy,excited,sad,angry`` for the usual 4-class setup.
    keep_unagreed: Keep the utterances without a consensus category (``xxx``) as
        ``other`` (``emotion_native`` ``xxx``), for label sets that do not read the
        categories: paper 000's ``valence3`` counts all of IEMOCAP's utterances (default
        false; with it, a categorical label set should not be ``native``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serray.corpora.base import (
    Adapter,
    Scan,
    build_rows,
    find_layout_dir,
    layout_error,
    list_audio,
    opt_bool,
    opt_float,
    opt_list,
    require_dir,
    skipped_frame,
)
from serray.labels import CANONICAL, EXTRA

__all__ = ["ADAPTER", "EMOTIONS", "parse_evaluation", "scan"]

log = logging.getLogger(__name__)

NAME = "iemocap"
LAYOUT = (
    "Session1 ... Session5 each with sentences/wav/<dialog>/<utt>.wav and dialog/EmoEvaluation/<dialog>.txt, "
    "e.g. IEMOCAP_full_release/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
)
_FIX = "pass the folder that contains Session1 ... Session5 (e.g. IEMOCAP_full_release)"

#: IEMOCAP label code -> canonical label (``xxx``, no agreement, is dropped).
EMOTIONS: dict[str, str] = {
    "neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited",
    "fru": "frustrated", "fea": "fear", "sur": "surprise", "dis": "disgust", "oth": "other",
}

_SESSION_DIR = re.compile(r"^Session(\d+)$", re.IGNORECASE)
_TURN = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
_VOTE = re.compile(r"^C-[^:\s]+:\s*(.*)$")
_RATING = re.compile(r"^A-([^:\s]+):\s*(.*)$")
_VAL = re.compile(r"\bval\s+([\d.]+)")
_TRANSCRIPT = re.compile(r"^(\S+)\s+\[[\d.]+-[\d.]+\]:\s?(.*)$")


def parse_evaluation(text: str) -> list[dict[str, Any]]:
    """Parse one ``EmoEvaluation/<dialog>.txt``.

    Returns:
        One dict per utterance: ``utt``, ``code``, ``start_s``, ``end_s``, ``valence``,
        ``arousal``, ``dominance``, ``votes`` (one set of label codes per categorical
        evaluator) and ``ratings`` (``(evaluator, valence)`` per dimensional evaluator).

    Example:
        >>> u = parse_evaluation("[1.0 - 2.0]\\tSes01F_impro01_F000\\tneu\\t[2.5000, 2.5000, 2.5000]\\n"
        ...                      "A-E3:\\tval 3; act 2; dom  2;\\t()\\nA-F1:\\tval 2; act 2; dom  1;\\t()\\n")[0]
        >>> u["valence"], u["ratings"]
        (2.5, [('E3', 3.0), ('F1', 2.0)])
    """
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _TURN.match(line)
        if m:
            vad = [float(x) if x.strip() else float("nan") for x in m[5].split(",")]
            vad = (vad + [float("nan")] * 3)[:3]
            current = {
                "utt": m[3], "code": m[4].lower(), "start_s": float(m[1]), "end_s": float(m[2]),
                "valence": vad[0], "arousal": vad[1], "dominance": vad[2], "votes": [], "ratings": [],
            }
            out.append(current)
            continue
        r = _RATING.match(line)
        if r and current is not None:
            val = _VAL.search(r[2])
            if val:
                current["ratings"].append((r[1], float(val[1])))
            continue
        v = _VOTE.match(line)
        if v and current is not None:
            names = v[1].split("(", 1)[0]
            codes = {n.strip()[:3].lower() for n in names.split(";") if n.strip()}
            if codes:
                current["votes"].append(codes)
    return out


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _session_dirs(d: Path) -> list[Path]:
    return sorted((c for c in d.iterdir() if c.is_dir() and _SESSION_DIR.match(c.name)), key=lambda c: int(_SESSION_DIR.match(c.name)[1]))


def _ratings(u: dict[str, Any], external: bool) -> str:
    """The valence ratings of the external evaluators (``E*``) or of the others (the actors), ``;``-joined."""
    return ";".join(f"{v:g}" for who, v in u["ratings"] if who.upper().startswith("E") == external)


def scan(root: Path, corpus_name: str | None = None, min_agreement: Any = None, labels: Any = None,
         keep_unagreed: Any = False) -> Scan:
    """Scan an IEMOCAP release (see the module docstring for layout and options)."""
    corpus = corpus_name or NAME
    filters = _filters(min_agreement, labels, keep_unagreed)
    require_dir(root, ADAPTER, _FIX)
    base = find_layout_dir(root, lambda d: bool(_session_dirs(d)), ADAPTER, "no Session1 ... Session5 folders found", _FIX)
    records: list[dict[str, Any]] = []
    tally = _Tally()
    for sess in _session_dirs(base):
        records += _scan_session(sess, filters, tally)
    tally.log(filters)
    if not records:
        raise layout_error(NAME, base, "no labelled utterance with a wav file (after the filters)", LAYOUT, _FIX)
    rows = build_rows(records, corpus, base, language="en", naturalness="natural")
    rows.loc[~rows["improvised"].astype(bool), "naturalness"] = "acted"  # scripted: paper 002 splits IN / IA
    rows["improvised"] = rows["improvised"].astype(bool)
    rows["n_raters"] = rows["n_raters"].astype("int64")
    return Scan(rows=rows, skipped=skipped_frame(tally.skipped))


@dataclass(frozen=True)
class _Filters:
    """The adapter options that drop utterances (see the module docstring)."""

    min_agreement: float | None
    keep_labels: list[str] | None
    keep_unagreed: bool


def _filters(min_agreement: Any, labels: Any, keep_unagreed: Any) -> _Filters:
    keep_unagreed = opt_bool("keep_unagreed", keep_unagreed)
    min_agreement = opt_float("min_agreement", min_agreement, 0.0, 1.0)
    keep_labels = opt_list("labels", labels)
    if keep_labels is not None:
        bad = sorted(set(keep_labels) - set(CANONICAL) - set(EXTRA))
        if bad:
            raise ValueError(f"iemocap: labels {bad} are not canonical names; use names from {list(CANONICAL + EXTRA)}")
    return _Filters(min_agreement, keep_labels, keep_unagreed)


@dataclass
class _Tally:
    """What a scan left out: counts per reason, skipped files, an example of a missing wav."""

    counts: dict[str, int] = field(default_factory=lambda: {"xxx": 0, "unknown": 0, "no_wav": 0, "agreement": 0, "labels": 0})
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing_example: str = ""

    def log(self, filters: _Filters) -> None:
        counts = self.counts
        if counts["xxx"]:
            log.info("iemocap: %d utterance(s) labelled xxx (no evaluator agreement) dropped", counts["xxx"])
        if counts["agreement"]:
            log.info("iemocap: %d utterance(s) below min_agreement=%s dropped", counts["agreement"], filters.min_agreement)
        if counts["labels"]:
            log.info("iemocap: %d utterance(s) with labels outside %s dropped", counts["labels"], filters.keep_labels)
        if counts["unknown"]:
            log.warning("iemocap: %d utterance(s) with unknown label codes left out", counts["unknown"])
        if counts["no_wav"]:
            log.warning("iemocap: %d labelled utterance(s) have no wav file, e.g. %s", counts["no_wav"], self.missing_example)


def _transcripts(sess: Path) -> dict[str, str]:
    """Utterance id -> transcript of one session (empty without transcriptions)."""
    texts: dict[str, str] = {}
    tr_dir = sess / "dialog" / "transcriptions"
    if tr_dir.is_dir():
        for f in sorted(tr_dir.glob("*.txt")):
            if not f.name.startswith("."):
                for line in _read(f).splitlines():
                    m = _TRANSCRIPT.match(line.strip())
                    if m:
                        texts[m[1]] = m[2].strip()
    return texts


def _scan_session(sess: Path, filters: _Filters, tally: _Tally) -> list[dict[str, Any]]:
    """Records of one session's labelled utterances that pass the filters."""
    wav_dir, eval_dir = sess / "sentences" / "wav", sess / "dialog" / "EmoEvaluation"
    for d in (wav_dir, eval_dir):
        if not d.is_dir():
            raise layout_error(NAME, sess, f"missing folder {d.relative_to(sess)}", LAYOUT, _FIX)
    wavs = {p.stem: p for p in list_audio(wav_dir)}
    texts = _transcripts(sess)
    labelled: set[str] = set()
    records: list[dict[str, Any]] = []
    for f in sorted(eval_dir.glob("*.txt")):
        if f.name.startswith("."):
            continue
        for u in parse_evaluation(_read(f)):
            labelled.add(u["utt"])
            record = _record(u, f, wavs, texts, filters, tally)
            if record is not None:
                records.append(record)
    for stem, p in sorted(wavs.items()):
        if stem not in labelled:
            tally.skipped.append((p, f"no label line for {stem} in {eval_dir}"))
    return records


def _record(
    u: dict[str, Any], f: Path, wavs: dict[str, Path], texts: dict[str, str], filters: _Filters, tally: _Tally
) -> dict[str, Any] | None:
    """The manifest record of one evaluated utterance ``u`` (from file ``f``), or ``None`` (counted) if left out."""
    utt, code = u["utt"], u["code"]
    if code == "xxx" and not filters.keep_unagreed:
        tally.counts["xxx"] += 1
        return None
    if code not in EMOTIONS and code != "xxx":
        tally.counts["unknown"] += 1
        if utt in wavs:
            tally.skipped.append((wavs[utt], f"unknown IEMOCAP label code {code!r} in {f}"))
        return None
    if utt not in wavs:
        tally.counts["no_wav"] += 1
        tally.missing_example = tally.missing_example or f"{utt} (labelled in {f})"
        return None
    votes = u["votes"]
    agreement = sum(code in v for v in votes) / len(votes) if votes else float("nan")
    if filters.min_agreement is not None and not agreement >= filters.min_agreement:
        tally.counts["agreement"] += 1
        return None
    emotion = EMOTIONS.get(code, "other")  # xxx (kept with keep_unagreed): no consensus category
    if filters.keep_labels is not None and emotion not in filters.keep_labels:
        tally.counts["labels"] += 1
        return None
    session = utt[:5]
    who = utt.rsplit("_", 1)[-1][:1].upper()
    if who not in {"F", "M"}:
        tally.skipped.append((wavs[utt], f"cannot read the speaker's gender from {utt!r} (expected ..._F000/_M000)"))
        return None
    dialog = utt.rsplit("_", 1)[0]
    improvised = "_impro" in dialog
    return {
        "path": wavs[utt], "speaker": f"{session}_{who}", "emotion": emotion, "gender": who.lower(),
        "session": session, "valence": u["valence"], "arousal": u["arousal"],
        "valence_ratings": _ratings(u, True), "valence_ratings_actors": _ratings(u, False),
        "emotion_native": code, "dialog": dialog, "improvised": improvised,
        "method": "impro" if improvised else "script", "dominance": u["dominance"],
        "agreement": agreement, "n_raters": len(votes), "start_s": u["start_s"], "end_s": u["end_s"],
        **({"text": texts.get(utt)} if texts else {}),
    }


ADAPTER = Adapter(
    name=NAME, title="IEMOCAP", layout=LAYOUT, scan=scan, options=("min_agreement", "labels", "keep_unagreed"),
)
