"""`kws synth` (espeak-ng and flite keyword data) and `kws data summary`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from bnnkws.app.cli import main
from bnnkws.kws.data import synth
from bnnkws.kws.data import load_dataset


def test_synth_dataset_is_speech_placed_in_one_second(synth_words):
    for word in ("yes", "no", "marvin"):
        files = sorted((synth_words / word).glob("*_nohash_*.wav"))
        assert len(files) == 12
        for f in files[:4]:
            info = sf.info(f)
            assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
            y, _ = sf.read(f)
            # A word stands well above the noise floor somewhere inside the second.
            frames = y[: 16000 // 160 * 160].reshape(-1, 160)
            db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
            assert db.max() - np.median(db[:5]) > 15 or db.max() - db.min() > 25
    manifest = json.loads((synth_words / "synth.json").read_text())
    assert len(manifest["clips"]) == 36 and len(manifest["speakers"]) <= 8
    # Positions vary (the word is not always at the same place).
    onsets = []
    for f in sorted((synth_words / "yes").glob("*.wav")):
        y, _ = sf.read(f)
        onsets.append(int(np.argmax(np.abs(y) > 0.5 * np.abs(y).max())))
    assert np.ptp(onsets) > 2000


def test_synth_reads_as_folder_dataset_split_by_voice(synth_words):
    ds = load_dataset(synth_words, val_frac=0.2, test_frac=0.2)
    assert ds.kind == "folder" and ds.labels == ["marvin", "no", "yes"]
    assert all(c.speaker and c.speaker.startswith("en") for c in ds.clips)
    assert ds.speaker_overlap() == {}
    assert all(ds.split(s) for s in ("train", "validation", "testing"))


def test_synth_is_deterministic_and_varied(tmp_path):
    a = synth.plan(["go"], per_word=20, seed=4)
    assert a == synth.plan(["go"], per_word=20, seed=4)
    assert a != synth.plan(["go"], per_word=20, seed=5)
    assert len({u.speaker for u in a}) >= 6
    assert len({u.rate for u in a}) > 10 and len({u.pitch for u in a}) > 10
    # Speakers take turns: each says each word equally often (within one clip).
    import collections

    per = collections.Counter((u.word, u.speaker) for u in synth.plan(["a", "b"], 30, seed=1,
                                                                        speakers=7))
    assert len(per) == 14 and max(per.values()) - min(per.values()) <= 1
    synth.synthesize(["go"], tmp_path / "a", per_word=2, seed=4, progress=False)
    synth.synthesize(["go"], tmp_path / "b", per_word=2, seed=4, progress=False)
    fa = sorted(p.name for p in (tmp_path / "a" / "go").iterdir())
    assert fa == sorted(p.name for p in (tmp_path / "b" / "go").iterdir())
    for name in fa:
        assert (tmp_path / "a" / "go" / name).read_bytes() == \
            (tmp_path / "b" / "go" / name).read_bytes()


def test_synth_cli_and_missing_espeak(tmp_path, monkeypatch, capsys):
    assert main(["synth", "--words", "hey kws", "--out", str(tmp_path / "d"),
                 "--per-word", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 clips" in out
    assert len(list((tmp_path / "d" / "hey_kws").glob("*.wav"))) == 3
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main(["synth", "--words", "yes", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "espeak-ng" in err and "apt-get install espeak-ng" in err


def test_two_engines_share_the_speaker_pool_and_espeak_draws_stay(tmp_path):
    only = synth.plan(["go", "stop"], per_word=12, seed=3)
    both = synth.plan(["go", "stop"], per_word=12, seed=3, speakers=10,
                      engines=("espeak-ng", "flite"))
    assert {u.engine for u in only} == {"espeak-ng"}
    assert not any(u.speaker.startswith("flite-") for u in only)
    speakers = {u.speaker: u.engine for u in both}
    assert len(speakers) == 10
    assert sum(e == "flite" for e in speakers.values()) == 5
    assert all(s.startswith("flite-") == (e == "flite") for s, e in speakers.items())
    with pytest.raises(ValueError, match="unknown synthesizer 'festival'"):
        synth.plan(["go"], engines=("festival",))


def test_flite_vocal_tract_factor_scales_formants_and_duration():
    """The same word, voice, rate and pitch at vocal-tract factors 0.88 and 1.12: the larger
    factor is shorter by about 112/88 and its spectrum sits higher."""
    import dataclasses

    base = synth.Utterance(word="seven", voice="rms", variant="vt088", rate=160, pitch=30,
                           level_db=-6, noise_db=-90, noise_kind="white", position=0.0, seed=1,
                           engine="flite")
    low = synth.render(base)
    high = synth.render(dataclasses.replace(base, variant="vt112"))

    def extent(y):
        loud = np.flatnonzero(np.abs(y) > 0.05 * np.abs(y).max())
        return loud[-1] - loud[0]

    def centroid(y):
        spec = np.abs(np.fft.rfft(y)) ** 2
        return float(np.sum(np.fft.rfftfreq(len(y), 1 / 16000) * spec) / np.sum(spec))

    assert extent(low) / extent(high) == pytest.approx(112 / 88, rel=0.08)
    assert centroid(high) / centroid(low) == pytest.approx(112 / 88, rel=0.1)


def test_synth_cli_two_engines_and_missing_flite(tmp_path, monkeypatch, capsys):
    assert main(["synth", "--words", "lamp", "--out", str(tmp_path / "d"), "--per-word", "4",
                 "--speakers", "4", "--engine", "espeak-ng,flite"]) == 0
    names = sorted(p.name for p in (tmp_path / "d" / "lamp").glob("*.wav"))
    assert len(names) == 4 and sum(n.startswith("flite-") for n in names) == 2
    manifest = json.loads((tmp_path / "d" / "synth.json").read_text())
    assert manifest["engines"] == ["espeak-ng", "flite"]
    ds = load_dataset(tmp_path / "d", val_frac=0.0, test_frac=0.0)
    assert len({c.speaker for c in ds.clips}) == 4
    capsys.readouterr()
    monkeypatch.setattr(synth.shutil, "which", lambda name: None if name == "flite" else "/x")
    assert main(["synth", "--words", "lamp", "--out", str(tmp_path / "e"),
                 "--engine", "flite"]) == 2
    assert "apt-get install flite" in capsys.readouterr().err


def test_data_summary_cli_reports_broken_files(broken_words, tmp_path, capsys):
    rc = main(["data", "summary", str(broken_words), "--cache-dir", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "classes  3: marvin, no, yes" in out
    assert "3 unreadable files" in out
    for name in ("broken_truncated", "broken_empty", "broken_header"):
        assert name in out
    assert "speakers in two splits: none" in out
    rc = main(["data", "summary", str(broken_words), "--cache-dir", str(tmp_path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(info["problems"]) == 3
    assert sum(info["clips"].values()) == 39
    assert info["sample_rates"] == {"16000": 36}


def test_data_summary_on_shared_sets(sc_v2, fsdd, tmp_path, capsys):
    assert main(["data", "summary", str(sc_v2), "--cache-dir", str(tmp_path), "--json",
                 "--no-check"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "sc_test" and sum(info["clips"].values()) == 3518
    assert info["speaker_overlap"] == [] and all(info["speakers"].values())
    assert info["duration_s"]["max"] == pytest.approx(1.0)
    assert main(["data", "summary", f"fsdd:{fsdd}", "--json", "--no-check"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sample_rates"] == {"8000": 2000}
    assert info["duration_s"]["under_1s"] > 1900
    assert main(["data", "summary", str(fsdd), "--task", "12"]) == 2
    assert "FSDD has digits only" in capsys.readouterr().err


def test_data_bench_cli_prints_throughput(synth_words, capsys):
    assert main(["data", "bench", str(synth_words), "--clips", "12", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    for stage in ("log-mel cold", "log-mel cached", "augmented batches"):
        line = next(ln for ln in out.splitlines() if ln.startswith(stage))
        n, wall, rate, cpu_rate = line[len(stage):].split()
        assert int(n) > 0 and float(rate) > 0 and float(cpu_rate) > 0
