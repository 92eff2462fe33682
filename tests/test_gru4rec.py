"""GRU4Rec end to end on small data: learns a pattern, is reproducible, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.config import build_config
from nextclick.data import ItemIndex, SessionData
from nextclick.errors import ConfigError, DataError
from nextclick.models import load_model
from nextclick.models.gru4rec import PRESETS, GRU4Rec, GRU4RecConfig
from nextclick.training import fused, losses
from nextclick.training.sampling import DropoutScales


def pattern_sessions(n_sessions: int = 300, n_items: int = 12, seed: int = 0) -> SessionData:
    """Sessions walking the cycle A->B->C->D (items 0..3) from a random start, mixed with
    sessions over other items, so the next item after each of 0..3 is fully determined."""
    rng = np.random.default_rng(seed)
    sessions = []
    for s in range(n_sessions):
        if s % 2 == 0:
            start = rng.integers(4)
            sessions.append([(start + t) % 4 for t in range(rng.integers(3, 8))])
        else:
            sessions.append(list(rng.integers(4, n_items, size=rng.integers(2, 6))))
    items = np.concatenate(sessions).astype(np.int64)
    lengths = np.array([len(s) for s in sessions])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    times = np.repeat(np.arange(n_sessions, dtype=float), lengths)
    return SessionData(items, offsets, times, np.arange(n_sessions), n_items)


def _fit(**params) -> GRU4Rec:
    base = dict(layers=(16,), batch_size=8, n_sample=4, n_epochs=5, learning_rate=0.1,
                sample_store_mb=0.008)  # fmt: skip
    config = build_config(GRU4RecConfig, base, params)
    data = pattern_sessions()
    return GRU4Rec(config).fit(data, ItemIndex(np.arange(data.n_items)))


MODES = [
    dict(loss="cross-entropy", logq=1.0),
    dict(loss="bpr-max", bpreg=0.5, elu_param=0.5),
    dict(loss="top1-max", elu_param=0.0),
    dict(loss="bpr", elu_param=0.0),
    dict(loss="top1", elu_param=0.0),
    dict(loss="top1", final_act="tanh"),
    dict(constrained_embedding=False, embedding=8),
    dict(constrained_embedding=False, embedding="layersize", dropout_p_embed=0.2),
    dict(constrained_embedding=False, embedding=0),  # one-hot input
    dict(layers=(16, 12), dropout_p_hidden=0.1),
    dict(ff_layers=(10,)),
    dict(n_sample=0),
]


@pytest.mark.parametrize("params", MODES, ids=[str(m) for m in MODES])
def test_learns_the_cycle_in_every_mode(params):
    model = _fit(**params)
    for item in range(4):
        top, _ = model.recommend([item], k=1)
        assert top[0] == (item + 1) % 4, f"after {item}"


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = _fit(seed=3), _fit(seed=3), _fit(seed=4)
    for name in a.params_:
        assert torch.equal(a.params_[name], b.params_[name]), name
    assert not torch.equal(a.params_["Wy"], c.params_["Wy"])
    assert [e.loss for e in a.history_] == [e.loss for e in b.history_]


def test_save_load_round_trip_scores_exactly(tmp_path):
    model = _fit(layers=(16, 12), dropout_p_hidden=0.1)
    model.save(tmp_path / "gru")
    loaded = load_model(tmp_path / "gru")
    assert isinstance(loaded, GRU4Rec) and loaded.config == model.config
    prefixes = [[0], [1, 2], [5, 6, 7, 1]]
    np.testing.assert_array_equal(model.score_prefixes(prefixes), loaded.score_prefixes(prefixes))


def test_incremental_step_equals_replay():
    model = _fit()
    state = model.init_state(2)
    for items in ([0, 5], [1, 6], [2, 7]):
        state = model.step(state, np.array(items))
    np.testing.assert_allclose(
        model.scores(state), model.score_prefixes([[0, 1, 2], [5, 6, 7]]), rtol=1e-6
    )


def test_training_history_counts_every_pair():
    model = _fit(n_epochs=2)
    assert [e.epoch for e in model.history_] == [1, 2]
    data = pattern_sessions()
    assert all(e.events_per_second > 0 for e in model.history_)
    assert model.history_[1].loss < model.history_[0].loss
    assert data.n_events - data.n_sessions > 0


def test_presets_are_the_published_settings():
    rsc15 = build_config(GRU4RecConfig, GRU4Rec.preset("rsc15"))
    assert (rsc15.loss, rsc15.layers, rsc15.batch_size, rsc15.learning_rate, rsc15.momentum,
            rsc15.dropout_p_hidden, rsc15.sample_alpha, rsc15.logq) == \
        ("cross-entropy", (100,), 32, 0.2, 0.2, 0.4, 0.5, 1.0)  # fmt: skip
    rr = build_config(GRU4RecConfig, GRU4Rec.preset("retailrocket"))
    assert (rr.loss, rr.layers, rr.bpreg, rr.elu_param, rr.dropout_p_embed) == (
        "bpr-max", (224,), 1.95, 0.5, 0.5)  # fmt: skip
    assert set(PRESETS) == {"rsc15", "yoochoose", "rees46", "coveo", "retailrocket", "diginetica"}
    with pytest.raises(ConfigError, match="unknown preset 'rsc16'"):
        GRU4Rec.preset("rsc16")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dropout_p_hidden": "1.0"}, "dropout_p_hidden"),
        ({"layers": "0"}, "layers"),
        ({"loss": "hinge"}, "'hinge' is not one of"),
        ({"embedding": "-3"}, "embedding"),
        ({"batch_size": "0"}, "batch_size"),
        ({"batch_size": "1", "n_sample": "0"}, "batch_size': expected >= 2 when n_sample=0"),
    ],
)
def test_bad_parameters(params, message):
    with pytest.raises(ConfigError, match=message):
        build_config(GRU4RecConfig, params)


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        GRU4Rec(device="cuda")
    with pytest.raises(ConfigError, match="expected cpu, cuda, cuda:N or auto"):
        GRU4Rec(device="tpu")
    assert GRU4Rec(device="auto").device.type == "cpu"


NETWORKS = [
    dict(layers=(6,), dropout_p_embed=0.3, dropout_p_hidden=0.4),
    dict(layers=(6, 5), dropout_p_hidden=0.2, ff_layers=(4, 5)),
    dict(constrained_embedding=False, embedding=4, layers=(6, 3)),
    dict(constrained_embedding=False, embedding=0, layers=(6, 4), dropout_p_embed=0.25),
]


@pytest.mark.parametrize("params", NETWORKS, ids=[str(n) for n in NETWORKS])
def test_manual_backward_equals_autograd_in_float64(params):
    config = build_config(GRU4RecConfig, params)
    model = GRU4Rec(config)
    model.params_ = {
        name: t.double()
        for name, t in model._init_params(9, torch.Generator().manual_seed(1)).items()
    }
    for name in model.params_:  # biases start at 0: make them non-trivial
        model.params_[name] = model.params_[name] + 0.1 * torch.randn_like(model.params_[name])
    rng = torch.Generator().manual_seed(5)
    items = torch.tensor([0, 3, 3, 8])
    x = model._input_rows(items)
    hidden = [torch.randn(4, h, dtype=torch.float64, generator=rng) for h in config.layers]
    leaves = {name: t.clone().requires_grad_(True) for name, t in model.params_.items()}
    x = x.clone().requires_grad_(True)
    tape: list = []
    dropout = DropoutScales(np.random.default_rng(2))
    vector, _ = model._forward(x, hidden, leaves, dropout, tape)
    upstream = torch.randn(vector.shape, dtype=torch.float64, generator=rng)
    dense = [n for n in leaves if n not in ("Wy", "By", "E", "Wx0")]
    expected = torch.autograd.grad((vector * upstream).sum(), [x, *(leaves[n] for n in dense)])
    grads = {name: torch.empty_like(model.params_[name]) for name in dense}
    with torch.no_grad():
        d_x = model._backward(upstream, tape, model.params_, grads)
    torch.testing.assert_close(d_x, expected[0], rtol=1e-10, atol=1e-12)
    assert set(grads) == set(dense)
    for name, want in zip(dense, expected[1:], strict=True):
        torch.testing.assert_close(grads[name], want, rtol=1e-10, atol=1e-12, msg=name)


def test_gru_layer_is_pytorchs_gru_cell():
    model = GRU4Rec(build_config(GRU4RecConfig, {"layers": "5"}))
    p = model._init_params(7, torch.Generator().manual_seed(0))
    p = {k: v + 0.1 for k, v in p.items()}
    x, h = torch.randn(3, 5), torch.randn(3, 5)
    mine, _ = model._forward(x, [h], p, None)
    torch.testing.assert_close(
        mine,
        torch.gru_cell(x, h, p["gru0.weight_ih"], p["gru0.weight_hh"], p["gru0.bias_ih"],
                       p["gru0.bias_hh"]),
    )  # fmt: skip


@pytest.mark.parametrize(("loss", "elu"), [("cross-entropy", 0), ("bpr-max", 0.5), ("bpr-max", 0)])
def test_compiled_losses_equal_autograd_of_the_formula(loss, elu):
    # 5 rows, 12 columns scoring 7 distinct items (samples repeat items, also the targets).
    rng = np.random.default_rng(0)
    y = torch.tensor([0, 1, 2, 3, 4, 2, 5, 5, 6, 0, 6, 5])
    unique, inverse = map(torch.from_numpy, fused.unique_inverse(y.numpy(), np.full(7, -1)))
    assert unique.tolist() == list(range(7))
    support = rng.integers(1, 50, size=7).astype(float)
    R_items = torch.tensor(rng.normal(size=(5, 7)) * 2)
    t = R_items.clone().requires_grad_(True)
    R = t.index_select(1, inverse)  # the loss's (5, 12) score matrix
    d_R, d_bias = torch.zeros(5, 7, dtype=torch.float64), torch.empty(7, dtype=torch.float64)
    if loss == "cross-entropy":
        log_q = torch.log(torch.tensor(support))[y]
        log_q[5:] *= 0.3  # sample_alpha for the extra samples
        want = losses.cross_entropy(R, log_q, 1.0)
        weights = (support**-1.0, support**-0.3)
        got = fused.cross_entropy_grad(R_items.clone(), y, inverse, *weights, 0.25, d_R, d_bias)
    else:
        want = losses.bpr_max(R, 1.5, elu)
        got = fused.bpr_max_grad(R.detach().clone(), 1.5, elu, inverse, 0.25, d_R, d_bias)
    (grad,) = torch.autograd.grad(want, t)
    assert got == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(d_R, 0.25 * grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(d_bias, 0.25 * grad.sum(0), rtol=1e-9, atol=1e-12)


STEPS = [
    dict(loss="cross-entropy", logq=1.0, sample_alpha=0.5),
    dict(loss="cross-entropy", logq=0.0),
    dict(loss="bpr-max", bpreg=0.7, elu_param=0.5),
    dict(loss="top1-max", elu_param=0.0),
    dict(loss="bpr", final_act="tanh"),
    dict(loss="cross-entropy", logq=1.0, constrained_embedding=False, embedding=3),
]


@pytest.mark.parametrize("params", STEPS, ids=[str(p) for p in STEPS])
def test_training_steps_equal_autograd_and_adagrad_by_hand(params):
    # Two steps of the model against an independent computation: autograd of the GRU cell
    # and the loss over every sampled column, then Adagrad with momentum applied by hand to
    # the rows each step used. Targets and samples repeat items and overlap the inputs.
    config = build_config(GRU4RecConfig, dict(layers=(5,), batch_size=4, learning_rate=0.3,
                                              momentum=0.4, n_sample=6), params)  # fmt: skip
    model = GRU4Rec(config)
    g = torch.Generator().manual_seed(4)
    start = {name: t.double() + 0.05 * torch.randn(t.shape, generator=g, dtype=torch.float64)
             for name, t in model._init_params(9, g).items()}  # fmt: skip
    support = np.array([5.0, 1, 3, 8, 2, 2, 7, 1, 4])
    params = {name: t.clone() for name, t in start.items()}
    work = model._work(params, support, np.random.default_rng(0), None)
    steps = [
        (torch.tensor([0, 3, 3, 8]), torch.tensor([1, 3, 2, 0, 3, 3, 5, 0, 8, 1])),
        (torch.tensor([1, 2, 6, 0]), torch.tensor([4, 4, 7, 3, 1, 4, 4, 8, 0, 6])),
    ]
    hidden = [torch.randn(4, 5, generator=g, dtype=torch.float64)]
    want = {name: t.clone() for name, t in start.items()}
    acc = {name: torch.zeros_like(t) for name, t in start.items()}
    mom = {name: torch.zeros_like(t) for name, t in start.items()}
    want_hidden = hidden
    for x, y in steps:
        with torch.no_grad():
            loss, hidden = model._train_step(x, y, hidden, work)
        leaves = {name: t.clone().requires_grad_(True) for name, t in want.items()}
        embedding = leaves["Wy"] if config.constrained_embedding else leaves["E"]
        h = torch.gru_cell(embedding[x], want_hidden[0], leaves["gru0.weight_ih"],
                           leaves["gru0.weight_hh"], leaves["gru0.bias_ih"],
                           leaves["gru0.bias_hh"])  # fmt: skip
        R = h @ leaves["Wy"][y].T + leaves["By"][y]
        log_q = torch.log(torch.tensor(support))[y]
        log_q[4:] *= config.sample_alpha
        expected_loss = model._loss(R, y, 4, torch.log(torch.tensor(support))) / 4
        assert loss == pytest.approx(expected_loss.item(), rel=1e-10)
        names = list(leaves)
        grads = dict(zip(names, torch.autograd.grad(expected_loss, [leaves[n] for n in names]),
                         strict=True))  # fmt: skip
        used = {"Wy": torch.cat((x, y)) if config.constrained_embedding else y, "By": y,
                "E": x}  # fmt: skip
        for name in names:
            rows = torch.zeros(len(want[name]), dtype=torch.bool)
            rows[used.get(name, torch.arange(len(rows)))] = True
            grad = grads[name]
            new_acc = acc[name] + grad * grad
            new_mom = 0.4 * mom[name] - 0.3 * grad / torch.sqrt(new_acc + 1e-6)
            acc[name][rows], mom[name][rows] = new_acc[rows], new_mom[rows]
            want[name][rows] = want[name][rows] + new_mom[rows]
        want_hidden = [h.detach()]
    for name in start:
        torch.testing.assert_close(params[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(hidden[0], want_hidden[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max", "top1-max"])
def test_no_extra_samples_and_a_single_row_stay_finite(loss):
    # With n_sample=0 the last session's tail runs in a batch of one, with no negatives.
    model = _fit(n_sample=0, loss=loss, batch_size=3, n_epochs=2)
    assert all(np.isfinite(e.loss) for e in model.history_)
    assert all(torch.isfinite(p).all() for p in model.params_.values())


def test_elu_default_depends_on_the_loss_and_bad_loss_is_refused():
    assert GRU4RecConfig(loss="bpr-max").elu == 0.5
    assert GRU4RecConfig(loss="top1-max").elu == 0.0
    assert GRU4RecConfig(loss="top1-max", elu_param=1.0).elu == 1.0
    with pytest.raises(ConfigError, match="'loss'"):
        GRU4RecConfig(loss="bpr_max")


@pytest.mark.parametrize(
    "params",
    [
        dict(constrained_embedding=False, embedding=8),
        dict(constrained_embedding=False, embedding=0),
    ],
)
def test_output_bias_is_trained_in_every_input_mode(params):
    model = _fit(**params, n_epochs=1)
    assert model.params_["By"].abs().max() > 0


def test_items_without_training_events_are_refused():
    data = pattern_sessions(n_items=12)
    with pytest.raises(DataError, match="3 items of the item index have no training event"):
        GRU4Rec(build_config(GRU4RecConfig, {"n_epochs": 1})).fit(
            SessionData(data.items, data.offsets, data.times, data.session_ids, 15),
            ItemIndex(np.arange(15)),
        )


def test_corrupt_weights_are_a_one_line_error(tmp_path):
    model = _fit(n_epochs=1)
    model.save(tmp_path / "gru")
    (tmp_path / "gru" / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=r"weights\.pt: cannot load weights"):
        load_model(tmp_path / "gru")


def test_compiled_gru_gate_gradients_equal_the_torch_ones():
    from nextclick.models.gru4rec import gru_gate_grads

    g = torch.Generator().manual_seed(3)
    parts = [torch.rand(4, 5, dtype=torch.float64, generator=g) for _ in range(6)]
    for got, want in zip(fused.gru_gate_grads(*parts), gru_gate_grads(*parts), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_2016_tanh_squashes_the_scores_of_top1_and_bpr():
    R = torch.tensor([[2.0, -1.0, 0.5], [0.3, 3.0, -2.0]], dtype=torch.float64)
    y, log_support = torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.float64)
    for loss, plain in (("top1", losses.top1), ("bpr", losses.bpr)):
        model = GRU4Rec(GRU4RecConfig(loss=loss, final_act="tanh"))
        got = model._loss(R, y, 2, log_support)
        assert got.item() == pytest.approx(plain(torch.tanh(R)).item(), rel=1e-12)
        assert got.item() != pytest.approx(plain(R).item(), rel=1e-3)
    for bad in (dict(loss="bpr-max", final_act="tanh"), dict(loss="top1", final_act="relu"),
                dict(loss="top1", final_act="tanh", elu_param=0.5)):
        with pytest.raises(ConfigError, match="final_act"):
            GRU4RecConfig(**bad)


@pytest.mark.parametrize("params", [
    # A store of 10 blocks (126 steps an epoch): refilled within the epoch, and left with 4
    # unused blocks at the checkpoint.
    {"loss": "bpr-max", "n_sample": 64, "sample_store_mb": 0.0056, "dropout_p_embed": 0.2,
     "dropout_p_hidden": 0.3, "momentum": 0.1},
    {"loss": "cross-entropy", "n_sample": 0, "constrained_embedding": False,
     "embedding": 8, "dropout_p_hidden": 0.5},
])  # fmt: skip
def test_a_training_resumed_from_its_checkpoint_is_the_uninterrupted_training(params, tmp_path):
    def fit(directory, n_epochs, on_epoch=None):
        base = dict(layers=(16,), batch_size=8, learning_rate=0.1, n_epochs=n_epochs)
        data = pattern_sessions()
        return GRU4Rec(build_config(GRU4RecConfig, base, params)).fit(
            data, ItemIndex(np.arange(data.n_items)), on_epoch=on_epoch, checkpoint=directory)


    whole = fit(tmp_path / "whole", 3)
    fit(tmp_path / "split", 1)  # "interrupted" after epoch 1
    if params["n_sample"]:
        state = torch.load(tmp_path / "split" / "training.pt", weights_only=True)
        assert state["store"]["next"] == 6
    seen = []
    resumed = fit(tmp_path / "split", 3, seen.append)
    assert [s.epoch for s in seen] == [2, 3]
    assert [e.loss for e in resumed.history_] == [e.loss for e in whole.history_]
    assert resumed.params_.keys() == whole.params_.keys()
    assert all(torch.equal(resumed.params_[k], whole.params_[k]) for k in whole.params_)
