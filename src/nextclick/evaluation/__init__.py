"""Next-item evaluation: metrics and the batched evaluator."""

from nextclick.evaluation.evaluator import DEFAULT_CUTOFFS, EvalResult, evaluate
from nextclick.evaluation.metrics import TIE_MODES, Ties

__all__ = ["DEFAULT_CUTOFFS", "TIE_MODES", "EvalResult", "Ties", "evaluate"]
