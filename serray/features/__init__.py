"""Feature extraction on a Ray actor pool with a content-addressed cache.

Feature sets (extractors, each a small class with explicit, hashed parameters):

=============== ========= ====================================================================
name            kind      what
=============== ========= ====================================================================
``egemaps``     vector    openSMILE eGeMAPSv02 functionals, 88 values
``compare``     vector    openSMILE ComParE_2016 functionals, 6373 values
``lld``         sequence  paper 002's 32 frame LLDs (IS09: F0, voicing, ZCR, MFCC 1-12, energy + deltas)
``mfb``         sequence  40-band log-mel filterbank, 25 ms / 10 ms (paper 000)
``mfcc``        sequence  13 MFCCs of the same mel front end (librosa-identical)
``spectrogram`` segments  ADARL log-STFT, Hamming 20/40 ms, 0-4 kHz, 3 s segments ``[S, 2, 400, 300]``
``ssl``         vector    HuBERT / wav2vec 2.0 / WavLM hidden states per layer, mean-pooled
                          (``pooling=frames``: sequence)
``waveform``    sequence  the samples ``[T, 1]``, for models that fine-tune an SSL model themselves
=============== ========= ====================================================================

Typical use::

    from serray.features import extract_features, load_features
    extract_features("W", ["egemaps", "mfb"])                 # Ray actor pool, cached
    fs = load_features("W", "egemaps", manifest)              # fs.data: [N, 88]

See :mod:`serray.features.cache` for the cache layout, :mod:`serray.features.loading`
for loading from it and :mod:`serray.features.runner` for how work is spread over actors.
"""

from serray.features.base import (
    KINDS,
    Extractor,
    FeatureError,
    extractor_names,
    file_identity,
    get_extractor,
)
from serray.features.cache import FeatureCache, FeatureSet, FeaturesNotExtractedError
from serray.features.loading import list_cached, load_features
from serray.features.runner import ExtractionReport, extract_features

__all__ = [
    "KINDS",
    "Extractor",
    "FeatureError",
    "FeatureCache",
    "FeatureSet",
    "FeaturesNotExtractedError",
    "ExtractionReport",
    "extractor_names",
    "get_extractor",
    "file_identity",
    "extract_features",
    "load_features",
    "list_cached",
]
