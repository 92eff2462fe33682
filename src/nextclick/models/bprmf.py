"""BPR-MF with sessions as users; a session is the mean of its items' factors at prediction."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numba
import numpy as np
from tqdm import tqdm

from nextclick.data.sessions import SessionData
from nextclick.models.base import OnEpoch, Recommender, State, check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BPRMFConfig:
    """Parameters of BPR-MF (names and defaults of the GRU4Rec paper's baseline).

    Attributes
    ----------
    n_factors
        Latent dimensions.
    n_iterations
        Epochs of stochastic gradient descent over all training events.
    learning_rate
        SGD step size.
    lambda_session, lambda_item
        L2 regularisation of session and item factors.
    sigma
        Initial factors are uniform in ``[-sigma, sigma]`` (normal with sd ``sigma`` when
        ``init_normal``).
    seed
        Seed of the initialisation, the event order and the negative samples.
    """

    n_factors: int = 100
    n_iterations: int = 10
    learning_rate: float = 0.01
    lambda_session: float = 0.0
    lambda_item: float = 0.0
    sigma: float = 0.05
    init_normal: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        check(self.n_factors >= 1, "n_factors", "an integer >= 1")
        check(self.n_iterations >= 1, "n_iterations", "an integer >= 1")
        check(self.learning_rate > 0, "learning_rate", "a number > 0")
        check(self.lambda_session >= 0, "lambda_session", "a number >= 0")
        check(self.lambda_item >= 0, "lambda_item", "a number >= 0")
        check(self.sigma > 0, "sigma", "a number > 0")


@numba.njit(cache=True, error_model="numpy")
def _sgd_epoch(U, V, sessions, items, order, negatives, lr, lambda_session, lambda_item):
    """One pass of BPR updates in the given event order; returns the summed log-likelihood.

    Each update reads the three factor rows before changing any of them, as the reference.
    """
    total = 0.0
    n_factors = U.shape[1]
    for pos in range(len(order)):
        e = order[pos]
        u = sessions[e]
        p = items[e]
        q = negatives[pos]
        x = 0.0
        for f in range(n_factors):
            x += (V[p, f] - V[q, f]) * U[u, f]
        sig = 1.0 / (1.0 + math.exp(-x))
        c = 1.0 - sig
        for f in range(n_factors):
            uf = U[u, f]
            pf = V[p, f]
            qf = V[q, f]
            U[u, f] += lr * (c * (pf - qf) - lambda_session * uf)
            V[p, f] += lr * (c * uf - lambda_item * pf)
            V[q, f] += lr * (-c * uf - lambda_item * qf)
        total += math.log(max(sig, 1e-300))
    return total


class BPRMF(Recommender):
    """Bayesian personalised ranking matrix factorisation with training sessions as users.

    One uniformly drawn negative item per training event; the reference's item biases never
    leave zero, so they are left out. At prediction a session is the mean of the factor
    vectors of its items so far (repeats included). The state is the running sum and count.
    """

    name = "bprmf"
    Config = BPRMFConfig

    def _fit(self, train: SessionData, *, progress: bool, on_epoch: OnEpoch) -> None:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        shape_u, shape_i = (train.n_sessions, cfg.n_factors), (train.n_items, cfg.n_factors)
        if cfg.init_normal:
            U = rng.standard_normal(shape_u) * cfg.sigma
            V = rng.standard_normal(shape_i) * cfg.sigma
        else:
            U = rng.random(shape_u) * 2 * cfg.sigma - cfg.sigma
            V = rng.random(shape_i) * 2 * cfg.sigma - cfg.sigma
        sessions = np.repeat(np.arange(train.n_sessions), train.lengths)
        items = train.items.astype(np.int64)
        for epoch in tqdm(range(cfg.n_iterations), desc="bprmf", disable=not progress):
            started = time.perf_counter()
            order = rng.permutation(train.n_events)
            negatives = rng.integers(train.n_items, size=train.n_events)
            loglik = _sgd_epoch(
                U, V, sessions, items, order, negatives,
                cfg.learning_rate, cfg.lambda_session, cfg.lambda_item,
            )  # fmt: skip
            log.info(
                "bprmf epoch %d: mean log-likelihood %.5f, %.1f s",
                epoch + 1, loglik / train.n_events, time.perf_counter() - started,
            )  # fmt: skip
        self.item_factors_ = V

    def init_state(self, n: int) -> State:
        return np.zeros((n, self.config.n_factors)), 0

    def step(self, state: State, items: np.ndarray) -> State:
        total, count = state
        return total + self.item_factors_[np.asarray(items)], count + 1

    def select(self, state: State, rows: np.ndarray) -> State:
        total, count = state
        return total[rows], count

    def scores(self, state: State, start: int = 0, stop: int | None = None) -> np.ndarray:
        total, count = state
        session = total / max(count, 1)  # (n, F)
        return session @ self.item_factors_[start:stop].T  # (n, stop - start)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.item_factors_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_factors_ = arrays["item_factors"]
