"""`kws features` end to end on real clips: printed figures, .npy and PNG outputs, user errors."""
import re

import numpy as np

from bnnkws.app.cli import main
from bnnkws.frontend.audio import load_audio
from bnnkws.frontend.reference import log_mel


def test_features_all_impls_write_npy_and_png(tmp_path, sc_v2, capsys):
    clip = sorted((sc_v2 / "stop").glob("*.wav"))[0]
    out, png = tmp_path / "f.npy", tmp_path / "f.png"
    rc = main(["features", str(clip), "--out", str(out), "--plot", str(png), "--runs", "3"])
    text = capsys.readouterr().out
    assert rc == 0, text
    y = load_audio(clip)
    expected = log_mel(y)
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == expected.shape
    np.testing.assert_array_equal(saved, expected)
    assert f"shape {expected.shape}" in text
    rows = re.findall(r"^(reference|keras|streaming).*?\s([0-9.]+e[-+]\d+)\s+([0-9.]+)$", text, re.M)
    assert [r[0] for r in rows] == ["reference", "keras", "streaming"], text
    for name, diff, ms in rows:
        assert float(diff) <= 1e-3 and float(ms) > 0, (name, diff, ms)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real, non-blank figure
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_features_short_8k_file(fsdd, capsys):
    clip = fsdd / "3_yweweler_10.wav"  # 8 kHz, shorter than 1 s: resampled, padded for timing
    assert main(["features", str(clip), "--impl", "streaming", "--chunk", "1000", "--runs", "3"]) == 0
    text = capsys.readouterr().out
    frames = log_mel(load_audio(clip)).shape
    assert f"shape {frames}" in text and "16000 Hz" in text
    assert re.search(r"^streaming \(1000-sample chunks\)\s+0\.00e\+00", text, re.M), text


def test_features_user_errors(tmp_path, capsys):
    assert main(["features", str(tmp_path / "missing.wav"), "--impl", "reference"]) == 2
    err = capsys.readouterr().err
    assert "missing.wav" in err and "no such file" in err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + b"\0" * 100)
    assert main(["features", str(bad), "--impl", "reference"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["features", str(bad), "--out", str(tmp_path / "nope" / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
