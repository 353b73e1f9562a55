"""Streaming extractor == batch reference for every chunking, with bounded state."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnkws.frontend import DEFAULT_FRONTEND
from bnnkws.frontend.reference import log_mel
from bnnkws.frontend.streaming import StreamingLogMel

CFG = DEFAULT_FRONTEND


def run_stream(y, sizes, s=None):
    s = s or StreamingLogMel(CFG)
    out, pos, i = [], 0, 0
    while pos < len(y):
        n = sizes[i % len(sizes)]
        chunk = y[pos : pos + n]
        out.append(s.push(chunk))
        assert s.buffered < CFG.win_length  # leftover is less than one window
        assert s.max_buffered <= CFG.win_length - 1 + max(sizes)
        pos += n
        i += 1
    return np.concatenate(out), s


@pytest.mark.parametrize("size", [1, 160, 399, 400, 1000, 4096, 16000])
def test_fixed_chunk_sizes(frontend_clips, size):
    y = frontend_clips["fsdd/7_theo_3.wav"]
    frames, s = run_stream(y, [size])
    ref = log_mel(y)
    assert frames.shape == ref.shape == (98, 64)
    np.testing.assert_allclose(frames, ref, atol=1e-5, rtol=0)
    assert s.frames_emitted == 98 and s.samples_seen == 16000


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_chunkings_of_real_clips(frontend_clips, data):
    names = sorted(frontend_clips)
    name = data.draw(st.sampled_from(names), label="clip")
    y = frontend_clips[name]
    sizes = data.draw(st.lists(st.integers(1, 5000), min_size=1, max_size=30), label="chunk sizes")
    frames, _ = run_stream(y, sizes)
    np.testing.assert_allclose(frames, log_mel(y), atol=1e-5, rtol=0, err_msg=name)


def test_long_stream_keeps_bounded_state_and_reset(frontend_clips):
    # 10 s of real audio in 1000-sample chunks: the buffer never grows with the stream.
    y = np.concatenate(list(frontend_clips.values())[:10])
    frames, s = run_stream(y, [1000])
    assert frames.shape == log_mel(y).shape
    np.testing.assert_allclose(frames, log_mel(y), atol=1e-5, rtol=0)
    assert s.max_buffered <= CFG.win_length - 1 + 1000
    s.reset()
    assert s.buffered == 0 and s.frames_emitted == 0
    np.testing.assert_allclose(s.push(y[:16000]), log_mel(y[:16000]), atol=1e-5, rtol=0)


def test_empty_and_tiny_chunks_emit_nothing_until_a_window_is_full():
    s = StreamingLogMel(CFG)
    assert s.push(np.zeros(0, np.float32)).shape == (0, 64)
    assert s.push(np.zeros(399, np.float32)).shape == (0, 64)
    assert s.push(np.zeros(1, np.float32)).shape == (1, 64)
    assert s.push(np.zeros(159, np.float32)).shape == (0, 64)
    assert s.push(np.zeros(1, np.float32)).shape == (1, 64)
    with pytest.raises(ValueError, match="NaN"):
        s.push(np.array([np.nan], np.float32))
