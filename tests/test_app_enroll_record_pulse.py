"""`kws enroll --record` through a real audio stack: paplay -> PulseAudio null sink -> its
monitor as the default source -> ALSA pulse plugin -> sounddevice -> the enrolment takes.

The word is played as a continuous run of real "marvin" clips while the command records, so
every take holds speech; the test checks the takes were captured (not silence), saved, and
enrolled into the bundle as a new word that `kws words` lists.
"""
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from e2e_pulse import PulseServer
from test_app_e2e_pulse import _require_pulse

pytestmark = pytest.mark.audio_stack


def test_enroll_record_takes_words_from_the_microphone(app_bundle, sc_v1_sample, tmp_path):
    _require_pulse()
    import soundfile as sf

    from bnnkws.frontend.audio import load_audio

    clips = sorted((sc_v1_sample / "marvin").glob("*.wav"))[:8]
    speech = np.concatenate([load_audio(c, length=16000) for c in clips] * 3)  # 24 s of "marvin"
    played = tmp_path / "marvin_run.wav"
    sf.write(played, speech, 16000)
    bundle = tmp_path / "bundle"
    shutil.copytree(app_bundle, bundle)
    takes_dir = tmp_path / "takes"

    with PulseServer(tmp_path / "pulse") as pa:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bnnkws.app", "enroll", str(bundle), "--word", "marvin",
             "--record", "3", "--seconds", "1.5", "--save-dir", str(takes_dir)],
            env=pa.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err, prompted = [], threading.Event()

        def drain():
            for line in proc.stderr:
                err.append(line)
                if "take 1/3" in line:
                    prompted.set()

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        assert prompted.wait(120), "".join(err)
        player = pa.play(played)  # starts while take 1 is being prompted
        out = proc.stdout.read()  # stderr belongs to the drain thread alone
        proc.wait(timeout=120)
        t.join(10)
        player.kill()
        player.wait()

    assert proc.returncode == 0, "".join(err) + out
    assert "enrolled 'marvin' from 3 examples" in out, out
    prompts = "".join(err)
    assert all(f"take {i}/3" in prompts for i in (1, 2, 3)) and "level" in prompts

    saved = sorted(takes_dir.glob("marvin_*.wav"))
    assert len(saved) == 3
    for f in saved:
        y, sr = sf.read(f, dtype="float32")
        assert sr == 16000 and len(y) == 24000
        # speech was captured, not the silence of an idle source
        frames = y[: len(y) // 800 * 800].reshape(-1, 800)
        loudest_db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)).max() + 1e-12)
        assert loudest_db > -40.0, (f, loudest_db)

    words = subprocess.run([sys.executable, "-m", "bnnkws.app", "words", str(bundle)],
                           capture_output=True, text=True, timeout=60)
    assert words.returncode == 0, words.stderr
    assert "marvin" in words.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "marvin" in manifest["labels"]
    assert manifest["enrolment"][-1]["source"] == "microphone"
