"""The ``waveform`` feature set: cropped samples ``[T, 1]``, cached and loaded as a sequence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from serray.features import extract_features, get_extractor, load_features

SR = 16000


def test_waveform_extract_crop_dtype_and_bad_params():
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    ext = get_extractor("waveform", max_seconds=2.0)
    out = ext.extract(audio)
    assert ext.kind == "sequence" and out.shape == (2 * SR, 1) and out.dtype == np.float16
    np.testing.assert_allclose(out[:, 0].astype(np.float32), audio[: 2 * SR], atol=1e-3)
    exact = get_extractor("waveform", max_seconds=0, dtype="float32").extract(audio)
    assert exact.shape == (3 * SR, 1) and np.array_equal(exact[:, 0], audio)
    assert get_extractor("waveform").key() != get_extractor("waveform", max_seconds=2.0).key()
    with pytest.raises(ValueError, match="dtype"):
        get_extractor("waveform", dtype="int8")
    with pytest.raises(ValueError, match="max_seconds"):
        get_extractor("waveform", max_seconds=-1)


def test_waveform_is_cached_and_loaded_as_frames(tmp_path):
    rows = []
    rng = np.random.default_rng(1)
    for i, dur in enumerate((0.5, 0.8)):
        p = tmp_path / f"u{i}.wav"
        sf.write(p, rng.normal(0, 0.1, int(dur * SR)).astype(np.float32), SR)
        rows.append({"utt_id": f"u{i}", "path": str(p)})
    m = pd.DataFrame(rows)
    rep = extract_features(tmp_path / "W", ["waveform"], m, num_actors=0, progress=False)["waveform"]
    assert rep.n_extracted == 2 and rep.n_failed == 0
    fs = load_features(tmp_path / "W", "waveform", m)
    assert fs.kind == "sequence" and fs.shape == (1,) and [a.shape for a in fs.data] == [(8000, 1), (12800, 1)]
