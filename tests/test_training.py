"""GRU4Rec's training primitives: losses, optimizer, session-parallel batches, sampling."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from nextclick.data.batching import n_pairs, session_parallel
from nextclick.data.sessions import SessionData
from nextclick.training import losses
from nextclick.training.optim import AdagradM, sum_rows
from nextclick.training.sampling import (
    DropoutScales,
    SampleStore,
    generator_state,
    set_generator_state,
)

# --- losses against direct NumPy formulas ---------------------------------------------------

R_NP = np.array(
    [
        [2.0, -1.0, 0.5, 0.3, -0.2],
        [0.1, 1.5, -0.7, 0.9, 0.05],  # no exact 0: ELU has a kink there
        [-0.4, 0.2, 0.8, -1.1, 1.2],
    ]
)
LOG_Q = np.log(np.array([3.0, 5.0, 2.0, 7.0, 1.0]))


def _np_softmax_neg(R):
    """Softmax of each row over its negatives, written out."""
    n, m = R.shape
    out = np.zeros_like(R)
    for i in range(n):
        neg = [j for j in range(m) if j != i]
        e = np.exp(R[i, neg] - R[i, neg].max())
        out[i, neg] = e / e.sum()
    return out


def _np_elu(R, a):
    return np.where(R > 0, R, a * (np.exp(R) - 1)) if a > 0 else R


def np_cross_entropy(R, log_q, logq):
    total = 0.0
    for i in range(R.shape[0]):
        row = R[i] - logq * log_q
        p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        total += -np.log(p[i] + 1e-24)
    return total


def np_bpr_max(R, bpreg, elu):
    R = _np_elu(R, elu)
    s = _np_softmax_neg(R)
    sig = 1 / (1 + np.exp(-(np.diag(R)[:, None] - R)))
    return sum(
        -np.log((sig[i] * s[i]).sum() + 1e-24) + bpreg * (R[i] ** 2 * s[i]).sum()
        for i in range(R.shape[0])
    )


def np_top1_max(R, elu):
    R = _np_elu(R, elu)
    s = _np_softmax_neg(R)
    sig = 1 / (1 + np.exp(-(R - np.diag(R)[:, None])))
    return (((sig + 1 / (1 + np.exp(-(R**2)))) * s).sum(axis=1)).sum()


def np_bpr(R, elu):
    R = _np_elu(R, elu)
    total = 0.0
    for i in range(R.shape[0]):
        neg = [j for j in range(R.shape[1]) if j != i]
        total += np.mean(-np.log(1 / (1 + np.exp(-(R[i, i] - R[i, neg]))) + 1e-24))
    return total


def np_top1(R, elu):
    R = _np_elu(R, elu)
    total = 0.0
    for i in range(R.shape[0]):
        neg = [j for j in range(R.shape[1]) if j != i]
        d = R[i, neg] - R[i, i]
        total += np.mean(1 / (1 + np.exp(-d)) + 1 / (1 + np.exp(-(R[i, neg] ** 2))))
    return total


CASES = [
    ("cross-entropy, logq=1", lambda R: losses.cross_entropy(R, torch.tensor(LOG_Q), 1.0),
     lambda R: np_cross_entropy(R, LOG_Q, 1.0)),
    ("cross-entropy, no logq", lambda R: losses.cross_entropy(R),
     lambda R: np_cross_entropy(R, LOG_Q, 0.0)),
    ("bpr-max, elu=0", lambda R: losses.bpr_max(R, 1.95, 0.0), lambda R: np_bpr_max(R, 1.95, 0.0)),
    ("bpr-max, elu=0.5", lambda R: losses.bpr_max(R, 0.9, 0.5), lambda R: np_bpr_max(R, 0.9, 0.5)),
    ("top1-max, elu=0", lambda R: losses.top1_max(R, 0.0), lambda R: np_top1_max(R, 0.0)),
    ("top1-max, elu=1", lambda R: losses.top1_max(R, 1.0), lambda R: np_top1_max(R, 1.0)),
    ("bpr", lambda R: losses.bpr(R, 0.0), lambda R: np_bpr(R, 0.0)),
    ("bpr, elu=0.5", lambda R: losses.bpr(R, 0.5), lambda R: np_bpr(R, 0.5)),
    ("top1", lambda R: losses.top1(R, 0.0), lambda R: np_top1(R, 0.0)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "torch_loss", "numpy_loss"), CASES, ids=[c[0] for c in CASES])
def test_loss_matches_numpy_formula_and_gradient(name, torch_loss, numpy_loss):
    R = torch.tensor(R_NP, dtype=torch.float64, requires_grad=True)
    assert torch_loss(R).item() == pytest.approx(numpy_loss(R_NP), rel=1e-12)
    assert torch.autograd.gradcheck(torch_loss, (R,), eps=1e-6, atol=1e-7)


def test_elu_zero_means_linear_not_elu_with_alpha_zero():
    # With elu_param=0 a negative score stays negative; ELU(alpha=0) would clip it to 0.
    R = torch.tensor(R_NP)
    assert losses.top1_max(R, 0.0).item() == pytest.approx(np_top1_max(R_NP, 0.0))
    clipped = np.maximum(R_NP, 0)
    assert losses.top1_max(R, 0.0).item() != pytest.approx(np_top1_max(clipped, 0.0))


# --- optimizer --------------------------------------------------------------------------------


def test_adagrad_momentum_dense_by_hand():
    p = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt = AdagradM({"w": p}, learning_rate=0.1, momentum=0.5)
    opt.dense("w", torch.tensor([0.5, 2.0], dtype=torch.float64))
    # acc = g^2; v = -lr g / sqrt(acc + 1e-6); p += v
    v1 = -0.1 * np.array([0.5, 2.0]) / np.sqrt(np.array([0.25, 4.0]) + 1e-6)
    np.testing.assert_allclose(p.numpy(), np.array([1.0, -2.0]) + v1, rtol=1e-12)
    opt.dense("w", torch.tensor([1.0, -1.0], dtype=torch.float64))
    acc2 = np.array([1.25, 5.0])
    v2 = 0.5 * v1 - 0.1 * np.array([1.0, -1.0]) / np.sqrt(acc2 + 1e-6)
    np.testing.assert_allclose(p.numpy(), np.array([1.0, -2.0]) + v1 + v2, rtol=1e-12)


def test_adagrad_rows_touch_only_used_rows_and_sum_duplicates():
    W = torch.ones(4, 2, dtype=torch.float64)
    opt = AdagradM({"W": W}, learning_rate=0.2, momentum=0.3)
    index = torch.tensor([2, 0, 2])
    grads = torch.tensor([[1.0, 0.0], [0.5, 0.5], [1.0, 2.0]], dtype=torch.float64)
    unique, summed = sum_rows(index, grads)
    assert unique.tolist() == [0, 2]
    np.testing.assert_array_equal(summed.numpy(), [[0.5, 0.5], [2.0, 2.0]])
    # Distinct rows plus extra rows that repeat them, as the shared embedding's output and
    # input rows are.
    opt.rows("W", index[1:2], grads[1:2].clone(), extra=(index[[0, 2]], grads[[0, 2]]))
    step = -0.2 * summed.numpy() / np.sqrt(summed.numpy() ** 2 + 1e-6)
    np.testing.assert_allclose(W[[0, 2]].numpy(), 1.0 + step, rtol=1e-12)
    np.testing.assert_array_equal(W[[1, 3]].numpy(), 1.0)  # untouched rows do not move
    np.testing.assert_array_equal(opt.acc["W"][[1, 3]].numpy(), 0.0)
    # Row 1 used later: its momentum starts from 0, row 0's keeps decaying only when used.
    one = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    opt.rows("W", None, None, extra=(torch.tensor([1]), one))
    np.testing.assert_allclose(W[1].numpy(), 1.0 - 0.2 / np.sqrt(1 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(W[0].numpy(), 1.0 + step[0], rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_compiled_updates_equal_the_torch_path(momentum):
    # The compiled CPU kernels and the torch operations used on GPUs do the same arithmetic.
    rng = torch.Generator().manual_seed(0)
    start = torch.randn(50, 3, dtype=torch.float64, generator=rng)
    a, b = start.clone(), start.clone()
    opt_a = AdagradM({"W": a}, learning_rate=0.1, momentum=momentum)
    opt_b = AdagradM({"W": b}, learning_rate=0.1, momentum=momentum)
    for _ in range(5):
        index = torch.randint(0, 50, (40,), generator=rng)
        distinct = torch.randperm(50, generator=rng)[:20]
        grad = torch.randn(60, 3, dtype=torch.float64, generator=rng)
        opt_a.rows("W", distinct, grad[:20].clone(), extra=(index, grad[20:]))
        opt_b._rows_torch("W", torch.cat((distinct, index)), grad)
        dense = torch.randn(50, 3, dtype=torch.float64, generator=rng)
        opt_a.dense("W", dense)
        opt_b._dense_torch("W", dense)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- session-parallel mini-batches ------------------------------------------------------------


def _sessions(lengths, start_times):
    items = np.concatenate([[10 * s + t for t in range(n)] for s, n in enumerate(lengths)])
    times = np.concatenate([[start_times[s] + t for t in range(n)] for s, n in enumerate(lengths)])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return SessionData(items, offsets, times.astype(float), np.arange(len(lengths)), 100)


def test_session_parallel_sequence_on_five_sessions():
    # Five sessions; session s holds items 10s, 10s+1, ...; session 4 starts first in time,
    # session 3 (length 1) has no pair and is skipped.
    data = _sessions([3, 2, 4, 1, 3], start_times=[10.0, 20.0, 30.0, 5.0, 0.0])
    steps = [(s.inputs.tolist(), s.targets.tolist(), s.reset.tolist(),
              None if s.keep is None else s.keep.tolist())
             for s in session_parallel(data, batch_size=2)]  # fmt: skip
    # Order by first event time: session 4 (t=0), 0 (t=10), 1 (20), 2 (30).
    assert steps == [
        ([40, 0], [41, 1], [True, True], None),
        ([41, 1], [42, 2], [False, False], None),
        ([10, 20], [11, 21], [True, True], None),  # both finished: sessions 1 and 2 start
        ([21], [22], [False], [1]),  # session 1 ended, nothing left: the batch shrinks
        ([22], [23], [False], None),
    ]
    assert sum(len(s[0]) for s in steps) == n_pairs(data) == 2 + 1 + 3 + 0 + 2


def test_session_parallel_uses_every_event_with_large_batches():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 9, size=200)
    data = _sessions(lengths, start_times=rng.permutation(200).astype(float) * 100)
    seen = []
    for step in session_parallel(data, batch_size=17):
        seen.extend(zip(step.inputs.tolist(), step.targets.tolist(), strict=True))
    expected = [(10 * s + t, 10 * s + t + 1) for s, n in enumerate(lengths) for t in range(n - 1)]
    assert sorted(seen) == sorted(expected)


# --- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("rng", ["numpy", "torch"])
def test_sample_store_follows_support_power_alpha(alpha, rng):
    # NumPy draws on the CPU; the torch path (used on GPUs) runs here on the CPU generator.
    support = np.array([1, 2, 3, 5, 8, 13, 40, 100])
    source = np.random.default_rng(7) if rng == "numpy" else torch.Generator().manual_seed(7)
    store = SampleStore(support, alpha, 512, 8 * 512 * 50, source)
    draws = torch.cat([store.next() for _ in range(200)]).numpy()  # refills 4 times
    counts = np.bincount(draws, minlength=len(support))
    expected = support**alpha / (support**alpha).sum() * len(draws)
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > 1e-3
    # A wrong exponent is detected by the same test.
    wrong = support ** (alpha + 0.5) / (support ** (alpha + 0.5)).sum() * len(draws)
    assert stats.chisquare(counts, wrong)[1] < 1e-6


def test_sample_store_holds_its_memory_in_whole_blocks():
    # 8,000 bytes hold 1,000 int64 ids: 250 blocks of 4, or 2 blocks of 384 (768 ids); a
    # store smaller than one block still holds one.
    support = np.ones(10)
    for n_sample, store_bytes, blocks in [(4, 8000, 250), (384, 8000, 2), (2048, 8000, 1)]:
        store = SampleStore(support, 0.5, n_sample, store_bytes, np.random.default_rng(0))
        store.next()
        assert store.n_blocks == blocks
        assert store._blocks.numel() * store._blocks.element_size() == 8 * n_sample * blocks


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_row_update_with_output_bias_equals_separate_updates(momentum):
    # The shared-embedding step updates Wy rows of inputs and outputs and, for the output
    # rows only, the bias By, in one compiled pass: it must equal the separate updates.
    rng = torch.Generator().manual_seed(1)
    W = torch.randn(30, 4, dtype=torch.float64, generator=rng)
    b = torch.randn(30, dtype=torch.float64, generator=rng)
    W2, b2 = W.clone(), b.clone()
    fused = AdagradM({"W": W, "b": b}, learning_rate=0.3, momentum=momentum)
    plain = AdagradM({"W": W2, "b": b2}, learning_rate=0.3, momentum=momentum)
    for _ in range(4):
        x = torch.randint(0, 30, (5,), generator=rng)
        y = torch.randperm(30, generator=rng)[:12]
        gx = torch.randn(5, 4, dtype=torch.float64, generator=rng)
        gy = torch.randn(12, 4, dtype=torch.float64, generator=rng)
        gb = torch.randn(12, dtype=torch.float64, generator=rng)
        fused.rows("W", y, gy.clone(), extra=(x, gx), bias=("b", gb))
        plain._rows_torch("W", torch.cat((x, y)), torch.cat((gx, gy)))
        plain._rows_torch("b", y, gb)
    torch.testing.assert_close(W, W2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b, b2, rtol=1e-12, atol=1e-12)


def test_row_update_without_extra_rows_moves_the_bias():
    # Separate-embedding modes update Wy's output rows alone, with the bias.
    W, b = torch.zeros(6, 2, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    opt = AdagradM({"W": W, "b": b}, learning_rate=0.5)
    y = torch.tensor([1, 4])
    opt.rows("W", y, torch.tensor([[2.0, 2.0], [1.0, 1.0]], dtype=torch.float64),
             bias=("b", torch.tensor([2.0, -1.0], dtype=torch.float64)))  # fmt: skip
    step = 0.5 / np.sqrt(1 + 1e-6)
    np.testing.assert_allclose(b.numpy(), [0, -0.5 * 2 / np.sqrt(4 + 1e-6), 0, 0, step, 0])
    np.testing.assert_allclose(W[4].numpy(), [-step, -step])
    np.testing.assert_array_equal(W[[0, 2, 3, 5]].numpy(), 0.0)


@pytest.mark.parametrize("rng", ["numpy", "torch"])
def test_dropout_scales_drop_with_the_given_probability(rng):
    source = np.random.default_rng(3) if rng == "numpy" else torch.Generator().manual_seed(3)
    dropout = DropoutScales(source)
    # 300 draws of 32 x 100 cross the NumPy block boundary (2^20 values) several times.
    masks = torch.stack([dropout((32, 100), 0.4) for _ in range(300)])
    assert masks.shape == (300, 32, 100)
    values = torch.unique(masks).tolist()
    assert values == [0.0, pytest.approx(1 / 0.6)]
    dropped = int((masks == 0).sum())
    assert stats.binomtest(dropped, masks.numel(), 0.4).pvalue > 1e-3
    assert stats.binomtest(dropped, masks.numel(), 0.41).pvalue < 1e-6
    # Each probability has its own stream; consecutive draws differ.
    assert not torch.equal(dropout((32, 100), 0.4), dropout((32, 100), 0.4))
    assert (dropout((4, 5), 0.0) == 1.0).all()


@pytest.mark.parametrize("source", ["numpy", "torch"])
def test_restored_sample_store_and_dropout_blocks_draw_what_they_would_have(source, monkeypatch):
    # Small dropout blocks, so that the draws below cross block ends (as in long trainings).
    monkeypatch.setattr(DropoutScales, "_BLOCK", 50)

    def parts():
        rng = (np.random.default_rng(7) if source == "numpy"
               else torch.Generator().manual_seed(7))  # fmt: skip
        store = SampleStore(np.array([5.0, 1, 3, 8]), 0.5, 6, 8 * 6 * 4, rng)  # 4 blocks
        return rng, store, DropoutScales(rng)

    def draws(store, dropout, n):
        return [torch.cat((store.next().float(), dropout((3, 4), 0.25).ravel(),
                           dropout((2, 5), 0.5).ravel())) for _ in range(n)]  # fmt: skip

    rng, store, dropout = parts()
    draws(store, dropout, 5)  # mid-way through the store's 4 blocks and the dropout blocks
    saved = store.state(), dropout.state(), generator_state(rng)
    expected = draws(store, dropout, 9)
    rng, store, dropout = parts()
    store.restore(saved[0])
    dropout.restore(saved[1])
    set_generator_state(rng, saved[2])
    assert all(torch.equal(a, b) for a, b in zip(draws(store, dropout, 9), expected, strict=True))



_MALLOC = """
import ctypes, sys, torch
from nextclick.training.memory import reuse_freed_blocks
class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "reuse":
    assert reuse_freed_blocks()
MB = 1 << 20
before = libc.mallinfo2().hblkhd
blocks = [torch.ones(17 * MB // 4) for _ in range(3)]  # a step's table-sized tensors
mapped = (libc.mallinfo2().hblkhd - before) // MB
del blocks
print(mapped, libc.mallinfo2().fordblks // MB)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
@pytest.mark.parametrize(("mode", "mapped", "kept"), [("default", 51, 0), ("reuse", 0, 51)])
def test_freed_17_mb_blocks_stay_in_the_heap_for_the_next_step(mode, mapped, kept):
    """By default glibc maps each 17 MB block on its own and unmaps it when freed (the next
    step faults its pages in again); after ``reuse_freed_blocks`` the heap serves them and
    keeps them free for reuse (MB mapped for the blocks, MB free in the heap afterwards)."""
    done = subprocess.run([sys.executable, "-c", _MALLOC, mode], capture_output=True,
                          text=True, check=True)  # fmt: skip
    got_mapped, got_kept = map(int, done.stdout.split())
    assert got_mapped == mapped
    assert got_kept >= kept and got_kept < kept + 2


_HUGE_PAGES = """
import torch
from nextclick.training.memory import empty_table_like
def vm_flags(address):  # the kernel's flags for the mapping that holds address
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, stop = (int(x, 16) for x in head.split("-"))
            inside = start <= address < stop
        elif inside and head == "VmFlags:":
            return set(line.split()[1:])
like = torch.zeros(2, 3, dtype=torch.float64)
large = empty_table_like(torch.empty(0).new_empty((160_000, 100)))
small = empty_table_like(torch.empty(0).new_empty((10_000, 100)))
assert large.shape == (160_000, 100) and large.dtype == torch.float32
assert empty_table_like(like).shape == (2, 3) and empty_table_like(like).dtype == like.dtype
middle = large.data_ptr() + large.numel() * large.element_size() // 2
print("hg" in vm_flags(middle), "hg" in vm_flags(small.data_ptr()))
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux's madvise and smaps")
def test_a_large_item_table_is_advised_for_huge_pages_and_a_small_one_is_not():
    """In a fresh process (whose heap no earlier table has advised), a 64 MB table's mapping
    carries MADV_HUGEPAGE ('hg') and a 4 MB one, in the heap, does not. The table has the
    shape and dtype asked for."""
    done = subprocess.run([sys.executable, "-c", _HUGE_PAGES], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["True", "False"]
