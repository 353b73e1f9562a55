"""`kws serve` in a real browser: Debian's chromium driven by Playwright (never a downloaded one).

Each test starts `kws serve --input RECORDING` as a user would (a subprocess, port 0, the URL
and token read from what it prints), opens the page and checks what a person would see: the
detections of the recording appearing live and in order (the same ones `kws listen --fast`
finds), a word enrolled from uploaded takes appearing in the word list and being detected by
the running listener, and changes refused without the right token (the bundle's files
unchanged, byte for byte). Without chromium, Playwright or aiohttp the tests skip saying why;
under CI=true that is a failure.

``KWS_SERVE_SCREENSHOT=docs/serve.png pytest tests/test_app_serve.py -k enrol`` saves the
README's picture of the page (live detections, an enrolled word).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KWS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KEYWORDS = ["yes", "stop", "left", "go"]
DIGIT, SPEAKER, WORD = "3", "jackson", "three"
ENROL_TAKES = range(5)  # FSDD takes 0-4 teach the word; 5 and 6 are in the stream
STREAM_TAKES = (5, 6)
START_TIMEOUT_S = 60


def _missing(what: str):
    msg = f"{what}; the browser tests of `kws serve` need it"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (under CI=true this is a failure)")
    pytest.skip(msg)


def need_browser():
    """Playwright's ``sync_playwright``, once chromium, aiohttp and playwright are there."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium chromium-driver)")
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        _missing("aiohttp is not installed (pip install '.[serve]')")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package playwright is not installed (pip install '.[test]')")
    return sync_playwright


@pytest.fixture(scope="module")
def pw():
    with need_browser()() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw):
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory, sc_v2, fsdd) -> Path:
    """Four keyword clips of the test split, then two takes of the digit that are not among
    the enrolment takes, one second of silence around each (about 13 s)."""
    import soundfile as sf

    from bnnkws.frontend.audio import load_audio

    gap = np.zeros(16000, np.float32)
    parts = [gap]
    for w in KEYWORDS:
        parts += [load_audio(sorted((sc_v2 / w).glob("*.wav"))[0]), gap]
    for i in STREAM_TAKES:
        parts += [load_audio(fsdd / f"{DIGIT}_{SPEAKER}_{i}.wav"), gap]
    path = tmp_path_factory.mktemp("serve") / "keywords.wav"
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def expected(app_bundle, recording) -> list:
    """What `kws listen BUNDLE --input RECORDING --fast` detects: (time_s, word) in order."""
    from bnnkws.app.cli import build_parser
    from bnnkws.app.commands.listen import build_streamer
    from bnnkws.app.listener.listen import run_stream
    from bnnkws.app.listener.sources import FileSource

    args = build_parser().parse_args(["listen", str(app_bundle), "--input", str(recording),
                                      "--fast"])
    _, streamer = build_streamer(app_bundle, args)
    summary = run_stream(iter(FileSource(recording, realtime=False)), streamer)
    found = [(round(d.time_s, 3), d.label) for d in summary.detections]
    assert [w for _, w in found] == KEYWORDS, f"the bundle does not detect the recording's words: {found}"
    return found


@pytest.fixture
def bundle_copy(app_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(app_bundle, dst)
    return dst


def tree_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Served:
    """`kws serve ARGS --port 0` (or ``cmd`` + ARGS) in a subprocess: its URL and token from
    what it prints."""

    def __init__(self, *args, cwd: Path, cmd=None):
        cmd = (cmd or [sys.executable, "-m", "bnnkws.app", "serve"]) + [*map(str, args),
                                                                         "--port", "0"]
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.output: list = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.token = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.url is None or (self.token is None and "--token-file" not in args):
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"kws serve did not start in {START_TIMEOUT_S} s:\n" + self.text())
            if line is None:
                pytest.fail("kws serve exited at start-up:\n" + self.text())
            m = re.search(r"kws serve: (http://\S+/)", line)
            self.url = m.group(1) if m else self.url
            m = re.search(r"need the token (\S+)", line)
            self.token = m.group(1) if m else self.token

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def text(self) -> str:
        return "".join(self.output)

    def post(self, path: str, data: dict, token=None):
        """(status, JSON body) of a change made without the page."""
        req = urllib.request.Request(self.url.rstrip("/") + path, method="POST",
                                     data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"X-KWS-Token": token} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(*args, cmd=None):
        s = Served(*args, cwd=tmp_path, cmd=cmd)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def open_page(browser, url: str, token: str = ""):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + (f"#token={token}" if token else ""))
    page.errors = errors
    return page


def save_screenshot(page, path: Path) -> None:
    """The whole page as a 128-colour PNG (the page is flat colours: a third of the bytes)."""
    import io

    from PIL import Image

    page.wait_for_timeout(1500)  # let the newest detection's highlight fade
    png = page.screenshot(full_page=True)
    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128)
    img.save(path, optimize=True)


def detection_rows(page) -> list:
    """(time_s, word) of the page's detections table, oldest first."""
    rows = page.query_selector_all("#detections tbody tr")
    return [(round(float(r.get_attribute("data-time")), 3), r.get_attribute("data-word"))
            for r in reversed(rows)]


def test_page_shows_the_detections_live_in_order(browser, serve, app_bundle, recording,
                                                 expected):
    s = serve(app_bundle, "--input", recording)
    page = open_page(browser, s.url)
    # the first detection arrives while the stream is still live (pushed, not a final report)
    page.wait_for_selector("#detections tbody tr", timeout=30_000)
    assert page.get_attribute("#status", "data-state") == "listening"
    page.wait_for_selector("#status[data-state='ended']", timeout=40_000)
    assert detection_rows(page) == expected
    assert page.inner_text("#last-word") == expected[-1][1]
    # cost per hop and real-time factor, the words with their thresholds, the timeline drawn
    assert re.fullmatch(r"\d+\.\d\d ms", page.inner_text("#cost-mean"))
    assert float(page.inner_text("#cost-rtf")) < 1.0
    words = [r.get_attribute("data-word") for r in page.query_selector_all("#words tbody tr")]
    assert set(KEYWORDS) <= set(words) and "_silence_" not in words
    assert page.input_value("#words tr[data-word='yes'] input.threshold") == "0.600"
    drawn = page.evaluate("""() => { const c = document.querySelector('#timeline');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] && d[i] < 200) n++;
        return n; }""")
    assert drawn > 1000, "the timeline canvas is (nearly) empty"
    assert not page.errors
    # every detection was printed on the server's stdout too (a headless device's log)
    assert all(re.search(rf"\b{w}\b", s.text()) for _, w in expected)


def test_enrol_from_uploaded_takes_then_the_running_listener_detects_it(
        browser, serve, bundle_copy, recording, fsdd, expected, tmp_path):
    shutil.copy(recording, tmp_path / recording.name)  # short names on the page (screenshot)
    s = serve(bundle_copy.relative_to(tmp_path), "--input", recording.name, "--loop")
    page = open_page(browser, s.url, s.token)
    page.on("dialog", lambda d: d.accept())
    page.wait_for_selector("#words tbody tr[data-word='yes']")
    page.fill("#enrol-word", WORD)
    takes = [fsdd / f"{DIGIT}_{SPEAKER}_{i}.wav" for i in ENROL_TAKES]
    page.set_input_files("#upload", [str(p) for p in takes])
    # before enrolling: each take's waveform and what the model heard in it
    page.wait_for_selector(f"#takes .take >> nth={len(takes) - 1}")
    assert [c.get_attribute("data-name") for c in page.query_selector_all("#takes .take")] \
        == [p.name for p in takes]
    heard = page.query_selector_all("#takes .take .heard")
    labels = set(json.loads((bundle_copy / "manifest.json").read_text())["labels"])
    assert len(heard) == len(takes) and all(h.get_attribute("data-label") in labels
                                            for h in heard)
    assert page.inner_text("#heard").startswith("before learning it, the model heard the takes as:")
    assert page.evaluate("""() => [...document.querySelectorAll('#takes canvas')].every(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; })""")
    page.click("#enrol")
    page.wait_for_selector(f"#words tbody tr[data-word='{WORD}']", timeout=30_000)
    assert page.inner_text(f"#words tr[data-word='{WORD}'] td:nth-child(4)") == f"{len(takes)} takes"
    assert f"enrolled '{WORD}' from {len(takes)} examples" in page.inner_text("#enrol-report")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    assert WORD in manifest["labels"]
    assert manifest["enrolment"][-1]["source"] == "kws serve"
    # the running listener adopted the new bundle: the digit in the stream is detected
    page.wait_for_selector(f"#detections tbody tr[data-word='{WORD}']", timeout=45_000)
    assert s.proc.poll() is None
    assert {w for _, w in detection_rows(page)} <= {*KEYWORDS, WORD}
    shot = os.environ.get("KWS_SERVE_SCREENSHOT")
    if shot:
        save_screenshot(page, REPO / shot)
    # forget it from the page: gone from the list and from the bundle
    page.click(f"#words tr[data-word='{WORD}'] button.forget")
    page.wait_for_selector(f"#words tbody tr[data-word='{WORD}']", state="detached",
                           timeout=30_000)
    assert WORD not in json.loads((bundle_copy / "manifest.json").read_text())["labels"]
    assert not page.errors


def test_changes_need_the_token_and_bad_uploads_change_nothing(browser, serve, bundle_copy,
                                                               recording, fsdd, tmp_path):
    from bnnkws.frontend.audio import AudioError, load_audio

    before = tree_hashes(bundle_copy)
    token_file = tmp_path / "token"
    token_file.write_text("a-token-kept-in-a-file\n")
    s = serve(bundle_copy, "--input", recording, "--max-upload-mb", "1", "--token-file", token_file)
    assert s.token is None and "a-token-kept-in-a-file" not in s.text()  # not printed
    s.token = "a-token-kept-in-a-file"
    # a page elsewhere reaching 127.0.0.1 through DNS rebinding is refused, reads included
    req = urllib.request.Request(s.url + "api/state", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 403
    page = open_page(browser, s.url)
    page.wait_for_selector("#words tbody tr[data-word='yes']")
    page.fill("#token", "not-the-token")
    page.fill("#enrol-word", WORD)
    page.set_input_files("#upload", [str(fsdd / f"{DIGIT}_{SPEAKER}_{i}.wav") for i in ENROL_TAKES])
    page.wait_for_selector("#takes .take >> nth=4")
    page.click("#enrol")
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message").startswith("wrong or missing token")
    page.fill("#words tr[data-word='yes'] input.threshold", "0.9")
    page.click("#words tr[data-word='yes'] button.set")
    page.wait_for_function("() => document.querySelector('#message').textContent"
                           ".startsWith('wrong or missing token')")
    for path, body in (("/api/forget", {"word": "yes"}),
                       ("/api/threshold", {"word": "yes", "threshold": 0.9})):
        for token in (None, "not-the-token", s.token[:-1]):
            status, reply = s.post(path, body, token)
            assert status == 403 and reply["error"].startswith("wrong or missing token")

    # a file the audio reader cannot read: its one-line error, naming the file, on the page
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"these are not samples " * 40)
    with pytest.raises(AudioError) as err:
        load_audio(bad)
    page.fill("#token", s.token)
    page.evaluate("() => document.querySelector('#message').hidden = true")
    page.set_input_files("#upload", [str(bad)])
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message") == f"notes.wav: {err.value.problem}"
    assert len(page.query_selector_all("#takes .take")) == 5  # the bad take was not added
    # a request over --max-upload-mb: refused with the limit named
    big = tmp_path / "long.wav"
    import soundfile as sf

    sf.write(big, np.zeros(16000 * 40, np.float32), 16000, subtype="PCM_16")  # 1.3 MB
    page.evaluate("() => document.querySelector('#message').hidden = true")
    page.set_input_files("#upload", [str(big)])
    page.wait_for_selector("#message:not([hidden])")
    assert page.inner_text("#message").startswith("upload too large: at most 1 MB")

    assert tree_hashes(bundle_copy) == before
    # the right token works (a threshold through the page; the listener's words follow)
    page.fill("#words tr[data-word='yes'] input.threshold", "0.9")
    page.click("#words tr[data-word='yes'] button.set")
    page.wait_for_selector("#words tr[data-word='yes'] :text('user')", timeout=30_000)
    assert page.input_value("#words tr[data-word='yes'] input.threshold") == "0.900"
    assert not page.errors


def test_a_take_recorded_with_the_browser_microphone_is_a_pcm_wav_the_device_reads(
        pw, serve, app_bundle, recording, fsdd):
    """Chromium's fake capture device plays an FSDD take as the microphone; the page records
    it with WebAudio, makes a 16-bit PCM WAV in JavaScript and the server decodes it."""
    s = serve(app_bundle, "--input", recording)
    mic = fsdd / f"{DIGIT}_{SPEAKER}_7.wav"
    b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + [
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}"])
    try:
        page = open_page(b, s.url)
        page.wait_for_selector("#words tbody tr[data-word='yes']")
        page.click("#record")
        page.wait_for_selector("#takes .take", timeout=20_000)
        card = page.inner_text("#takes .take .name")
        assert card.startswith("take 1.wav · 2.0 s")
        level = int(re.search(r"(-?\d+) dBFS", card).group(1))
        assert level > -40, f"the recorded take is (nearly) silent: {card}"
        header = page.evaluate("""async () => {
            const a = document.querySelector('#takes audio');
            const buf = await (await fetch(a.src)).arrayBuffer();
            const v = new DataView(buf);
            const s = (o) => String.fromCharCode(...new Uint8Array(buf, o, 4));
            return [s(0), s(8), s(12), v.getUint16(20, true), v.getUint16(22, true),
                    v.getUint32(24, true), v.getUint16(34, true), s(36)]; }""")
        assert header[:5] == ["RIFF", "WAVE", "fmt ", 1, 1] and header[6:] == [16, "data"]
        assert not page.errors
    finally:
        b.close()


def test_the_pi_package_runs_the_console(browser, serve, app_bundle, recording, tmp_path):
    """`run_pi.py serve` in a Pi folder laid out as `kws deploy --target pi` lays it out (its
    own copy of the code under lib/, the bundle, the shipped filterbank): the page is served
    from lib/ and the listener runs; aiohttp is in the Pi's requirements."""
    from bnnkws.deploy.bundle import Bundle
    from bnnkws.deploy.targets import (MEL_FILE, PI_REQUIREMENTS, TEMPLATES, copy_code,
                                       save_filterbank)

    assert any(r.startswith("aiohttp") for r in PI_REQUIREMENTS)
    pi = tmp_path / "pi"
    copy_code(pi / "lib")
    shutil.copytree(app_bundle, pi / "bundle")
    shutil.copy(TEMPLATES / "run_pi.py", pi / "run_pi.py")
    save_filterbank(Bundle.load(pi / "bundle").frontend, pi / MEL_FILE)
    assert (pi / "lib/bnnkws/app/serve/static/app.js").is_file()
    s = serve("--input", recording, cmd=[sys.executable, str(pi / "run_pi.py"), "serve"])
    assert f"bundle {pi / 'bundle'}" in s.text()
    page = open_page(browser, s.url)
    page.wait_for_selector("#detections tbody tr", timeout=30_000)
    assert detection_rows(page)[0][1] == KEYWORDS[0]
    assert not page.errors
