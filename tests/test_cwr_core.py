"""CWR* arithmetic, fixed-point simulation, 1-bit latent packing and class-balanced reservoir."""
from __future__ import annotations

import numpy as np
import pytest

from bnnkws.kws.continual.cwr import (CWRStar, Precision, cross_entropy, cross_entropy_grad,
                                      fixed_point, parse_bits, softmax)
from bnnkws.kws.continual.replay import (ReplayMemory, channel_scales, mixed_batches, pack_bits,
                                         unpack_bits)


def test_consolidation_matches_hand_computed_example():
    # Head: D = 2 inputs, C = 3 classes, columns are classes.
    cw = np.array([[1.0, 0.0, 2.0],
                   [0.0, 1.0, 0.0]])
    cb = np.array([0.5, 0.0, 0.0])
    head = CWRStar(cw, cb, past=[9, 7, 0])
    # Batch holds class 0 (cur = 4) and class 2 (cur = 2, never seen: past = 0).
    tw = np.array([[3.0, 0.0, 1.0],
                   [1.0, 0.0, -1.0]])
    tb = np.array([1.0, 0.0, 1.0])
    head.consolidate(tw, tb, {0: 4, 2: 2})
    # mean(tw) over the batch classes' units, bias included:
    #   (3 + 1 + 1 - 1 + 1 + 1) / 6 = 1
    # class 0: w_past = sqrt(9 / 4) = 1.5
    #   cw[:,0] = ([1, 0] * 1.5 + [3, 1] - 1) / 2.5 = [3.5, 0] / 2.5 = [1.4, 0]
    #   cb[0]   = (0.5 * 1.5 + 1 - 1) / 2.5 = 0.3
    # class 2: w_past = sqrt(0 / 2) = 0
    #   cw[:,2] = [1, -1] - 1 = [0, -2];  cb[2] = 1 - 1 = 0
    # class 1 is not in the batch: unchanged.  past = [9 + 4, 7, 0 + 2]
    np.testing.assert_allclose(head.cw, [[1.4, 0.0, 0.0], [0.0, 1.0, -2.0]], atol=1e-6)
    np.testing.assert_allclose(head.cb, [0.3, 0.0, 0.0], atol=1e-6)
    assert head.past.tolist() == [13, 7, 2]


def test_closed_form_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    y = np.array([0, 2, 1, 2, 0])
    dw, db = cross_entropy_grad(x, softmax(x @ w + b), y)
    eps = 1e-6
    for (i, j) in [(0, 0), (3, 2), (1, 1)]:
        wp, wm = w.copy(), w.copy()
        wp[i, j] += eps
        wm[i, j] -= eps
        num = (cross_entropy(softmax(x @ wp + b), y) - cross_entropy(softmax(x @ wm + b), y)) / (2 * eps)
        assert dw[i, j] == pytest.approx(num, abs=1e-6)
    bp = b.copy()
    bp[1] += eps
    num = (cross_entropy(softmax(x @ w + bp), y) - cross_entropy(softmax(x @ w + b), y)) / eps
    assert db[1] == pytest.approx(num, abs=1e-5)


def test_fit_batch_learns_new_class_and_leaves_absent_classes_alone():
    rng = np.random.default_rng(0)
    d = 16
    centers = np.sign(rng.normal(size=(4, d)))
    cw = (centers[:3].T * 0.2).astype(np.float32)  # three old classes, template heads
    head = CWRStar(cw, np.zeros(3), past=[100, 100, 100], epochs=20, lr=0.1)
    before = head.cw.copy()
    x_new = np.sign(centers[3] + 0.8 * rng.normal(size=(10, d)))
    new = head.add_class()
    head.fit_batch(x_new, np.full(10, new))
    np.testing.assert_array_equal(head.cw[:, :3], before)  # classes not in the batch untouched
    assert head.past.tolist() == [100, 100, 100, 10]
    test = np.sign(centers + 0.8 * rng.normal(size=(4, d)))
    assert head.predict(test[3:])[0] == new
    assert (head.predict(test[:3]) == [0, 1, 2]).all()


def test_fixed_point_rounds_and_saturates():
    np.testing.assert_allclose(fixed_point(np.array([0.3, -0.1, 0.001]), 8),
                               [0.30078125, -0.1015625, 0.0])  # LSB 2**-8 for |x| <= 0.5
    assert fixed_point(np.array([1.0, -1.0]), 8).tolist() == [1.0, -1.0]
    # 4 bits for max_abs = 1: 1 sign + 1 integer + 2 fraction bits, top code 7 * 0.25 = 1.75
    assert fixed_point(np.array([3.0, 0.5]), 4, max_abs=1.0).tolist() == [1.75, 0.5]
    assert parse_bits("float") is None and parse_bits("16") == 16
    with pytest.raises(ValueError, match="bits must be"):
        parse_bits("12")


def test_hp_bits_swallow_small_updates():
    # A step far below the 8-bit LSB of weights of size ~1 vanishes; 16 bits keeps it.
    w = np.array([[1.0, -0.5]], np.float32)
    x, y = np.array([[1.0]]), np.array([0])
    moved = {}
    for bits in (8, 16, None):
        h = CWRStar(w, np.zeros(2), lr=1e-3, epochs=1, precision=Precision(lp=bits, hp=bits))
        tw, _ = h.train_tw(x, y, h.cw, h.cb)
        moved[bits] = float(np.abs(tw - w).max())
    assert moved[8] == 0.0
    assert moved[16] > 0 and moved[None] == pytest.approx(moved[16], rel=0.05)


@pytest.mark.parametrize("shape", [(3, 5, 7), (13,), (2, 2, 64)])
def test_one_bit_packing_round_trip(shape):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6,) + shape).astype(np.float32)
    packed = pack_bits(x)
    n = int(np.prod(shape))
    assert packed.dtype == np.uint8 and packed.shape == (6, (n + 7) // 8)
    back = unpack_bits(packed, shape)
    np.testing.assert_array_equal(back, np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(pack_bits(back), packed)  # ±1 survives exactly


def test_memory_bytes_and_scales():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 4, 4, 32)).astype(np.float32)
    m = ReplayMemory(10, (4, 4, 32))
    assert m.bytes_per_sample == 4 * 4 * 32 // 8 + 2  # 64 bytes of bits + label
    assert m.float32_bytes_per_sample == 4 * 4 * 4 * 32 + 2
    ms = ReplayMemory(10, (4, 4, 32), with_scales=True)
    ms.add(x, np.arange(4))
    got, labels = ms.get()
    assert labels.tolist() == [0, 1, 2, 3]
    sc = channel_scales(x).astype(np.float32)
    np.testing.assert_allclose(got, np.where(x >= 0, 1, -1) * sc[:, None, None, :], rtol=1e-6)
    assert ms.bytes_per_sample == 64 + 2 * 32 + 2


def test_reservoir_is_class_balanced_on_an_imbalanced_stream(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array([0] * 1000 + [1] * 50 + [2] * 200)
    rng.shuffle(y)
    m = ReplayMemory(60, (9,), seed=0)
    m.add(rng.normal(size=(len(y), 9)), y)
    assert m.counts() == {0: 20, 1: 20, 2: 20}
    # A class with fewer samples than its share keeps all of them; the rest split the room.
    y2 = np.array([0] * 300 + [1] * 10 + [2] * 200)
    m2 = ReplayMemory(60, (9,), seed=0)
    m2.add(rng.normal(size=(len(y2), 9)), y2)
    assert m2.counts() == {0: 25, 1: 10, 2: 25}
    m2.save(tmp_path / "mem.npz")
    back = ReplayMemory.load(tmp_path / "mem.npz")
    assert back.counts() == m2.counts()
    np.testing.assert_array_equal(back.get()[0], m2.get()[0])


def test_mixed_batches_ratio():
    m = ReplayMemory(40, (5,), seed=0)
    m.add(np.ones((40, 5)), np.zeros(40, int))
    batches = list(mixed_batches(np.ones((16, 5)), np.ones(16, int), m, ratio=4, batch_new=8))
    assert len(batches) == 2
    for x, y in batches:
        assert (y == 1).sum() == 8 and (y == 0).sum() == 32 and x.shape == (40, 5)


def test_roundtrip_matches_storage():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 2, 8)).astype(np.float32)
    for scales in (False, True):
        m = ReplayMemory(5, (2, 2, 8), with_scales=scales)
        m.add(x, np.arange(3))
        np.testing.assert_allclose(m.roundtrip(x), m.get()[0], rtol=1e-6)
