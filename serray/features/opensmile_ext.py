"""openSMILE feature sets: eGeMAPS and ComParE functionals, IS09 frame-level LLDs.

* ``egemaps``: eGeMAPSv02 functionals, 88 values per utterance (paper 000, sec. 4.5:
  "extracted by the openSMILE toolkit with default parameters").
* ``compare``: ComParE_2016 functionals, 6373 values per utterance.
* ``lld``: the 32 frame-level features of the multi-task paper (paper 002, sec. 4.1):
  F0, voicing probability, zero-crossing rate, MFCC 1-12 and energy, and their first
  derivatives, on 25 ms windows every 10 ms, after normalising the utterance gain. This
  is exactly openSMILE's INTERSPEECH 2009 emotion challenge LLD set (the set the paper's
  references [22, 23] use): ``pcm_RMSenergy``, ``mfcc[1-12]``, ``pcm_zcr``, ``voiceProb``,
  ``F0`` (all smoothed with a 3-frame moving average) and their delta regression
  coefficients. F0 and voicing probability come from openSMILE's autocorrelation /
  cepstrum pitch tracker (``cPitchACF``); F0 is 0 in unvoiced frames. Gain
  normalisation scales the utterance to a peak amplitude of 1 (``normalize_gain``).

Each actor builds one ``opensmile.Smile`` per extractor and reuses it.

Example:
    >>> import numpy as np
    >>> ext = get_extractor("egemaps")
    >>> ext.extract(np.random.default_rng(0).normal(0, 0.1, 16000).astype("float32")).shape
    (88,)
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from serray.features.base import Extractor, FeatureError, get_extractor, register  # noqa: F401  (doctest)

__all__ = ["EGeMAPS", "ComParE", "LLD"]

log = logging.getLogger(__name__)


class _Functionals(Extractor):
    """Utterance-level openSMILE functionals of one feature set."""

    kind = "vector"
    libraries = ("opensmile",)
    feature_set: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {"sample_rate": 16000}

    def _setup(self) -> None:
        import opensmile

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[self.feature_set],
            feature_level=opensmile.FeatureLevel.Functionals,
        )

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        df = self._smile.process_signal(audio, self.sample_rate)
        if len(df) != 1:
            raise FeatureError(f"{self.name}: openSMILE returned {len(df)} rows of functionals, expected 1")
        return df.to_numpy(dtype=np.float32)[0]

    def feature_names(self) -> list[str]:
        import opensmile

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet[self.feature_set],
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        return list(smile.feature_names)

    def describe(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "feature_names": self.feature_names()}


@register
class EGeMAPS(_Functionals):
    """openSMILE eGeMAPSv02 functionals: 88 values per utterance."""

    name = "egemaps"
    feature_set = "eGeMAPSv02"


@register
class ComParE(_Functionals):
    """openSMILE ComParE_2016 functionals: 6373 values per utterance."""

    name = "compare"
    feature_set = "ComParE_2016"


@register
class LLD(Extractor):
    """Paper 002's 32 frame-level features (openSMILE IS09 LLDs + deltas), ``[T, 32]``.

    Parameters:
        sample_rate: Audio rate (16 kHz).
        normalize_gain: Scale each utterance to peak amplitude 1 first (paper 002, sec. 4.1).
    """

    name = "lld"
    kind = "sequence"
    libraries = ("opensmile",)
    defaults: ClassVar[dict[str, Any]] = {"sample_rate": 16000, "normalize_gain": True}

    def _setup(self) -> None:
        import opensmile

        fs = opensmile.FeatureSet.IS09
        self._lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        self._de = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors_Deltas)

    def _extract(self, audio: np.ndarray) -> np.ndarray:
        if self.params["normalize_gain"]:
            peak = float(np.max(np.abs(audio)))
            if peak == 0.0:
                raise FeatureError(f"{self.name}: the utterance is digital silence (all samples 0)")
            audio = audio / peak
        lld = self._lld.process_signal(audio, self.sample_rate).to_numpy(dtype=np.float32)
        de = self._de.process_signal(audio, self.sample_rate).to_numpy(dtype=np.float32)
        # The delta output repeats its last frame a few times (same time stamps); row i
        # of it is the delta of LLD row i, so align by position.
        if len(lld) == 0:
            raise FeatureError(f"{self.name}: utterance too short for one 25 ms frame")
        if len(de) < len(lld):
            raise FeatureError(f"{self.name}: openSMILE returned {len(de)} delta frames for {len(lld)} LLD frames")
        return np.concatenate([lld, de[: len(lld)]], axis=1)

    def feature_names(self) -> list[str]:
        import opensmile

        fs = opensmile.FeatureSet.IS09
        a = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors).feature_names
        b = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors_Deltas).feature_names
        return [*a, *b]

    def describe(self) -> dict[str, Any]:
        return {"feature_set": "IS09 LLD + deltas", "frame_s": 0.025, "hop_s": 0.010, "feature_names": self.feature_names()}
