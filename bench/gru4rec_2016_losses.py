"""The GRU4Rec paper's own loss table (ICLR 2016, Table 3) re-run with nextclick; prints one
JSON object.

    python bench/gru4rec_2016_losses.py [--dataset rsc15-100k|yoochoose1_64 ...]
        [--n-epochs 10] [--out FILE]

Rows: the 2016 losses ``top1``, ``bpr`` and ``cross-entropy`` with in-batch negatives only
(``n_sample=0``), one GRU layer of 100 and of 1000 units, one-hot input (no embedding), each
loss with the paper's Table 2 setting for RSC15 (mini-batch, dropout, learning rate,
momentum); beside them Item-KNN (the paper's best baseline, its definition) and the v2 losses
with 2048 popularity-sampled extra negatives (the ``rsc15`` preset's cross-entropy with logQ,
the ``retailrocket`` preset's BPR-max). Each row's relative change over Item-KNN is printed
as the paper did.

TOP1 and BPR squash the scores with tanh (``final_act=tanh``), the 2016 code's default for
those losses (the author's later versions keep them linear).

Data: ``rsc15-100k`` (train_full -> test of the RSC15 sample) and ``yoochoose1_64`` (SR-GNN's
1/64 split, whose test sessions are the RSC15 challenge's test day, through the
``srgnn-benchmark`` recipe). Every run trains a fixed ``--n-epochs`` (10, the 2016 code's
default; nothing is chosen on the test set) and is tested on every next click over the
whole catalogue, conservative ties; unknown test items are dropped as in the paper.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import SHARED, emit, nextclick, rsc15_sample, srgnn_split, summary

#: The paper's Table 2, RSC15 rows: (batch_size, dropout_p_hidden, learning_rate, momentum).
TABLE2_RSC15 = {
    "top1": (50, 0.5, 0.01, 0.0),
    "bpr": (50, 0.2, 0.05, 0.2),
    "cross-entropy": (500, 0.0, 0.01, 0.0),
}
#: The paper's Table 3, RSC15 (Recall@20, MRR@20) by (loss, units); Item-KNN's from Table 1.
PUBLISHED = {
    ("top1", 100): (0.5853, 0.2305), ("bpr", 100): (0.6069, 0.2407),
    ("cross-entropy", 100): (0.6074, 0.2430), ("top1", 1000): (0.6206, 0.2693),
    ("bpr", 1000): (0.6322, 0.2467), ("cross-entropy", 1000): (0.5777, 0.2153),
    ("item-knn", 0): (0.5065, 0.2048),
}  # fmt: skip
#: The v2 rows: the published cross-entropy (rsc15) and BPR-max (retailrocket) settings, with
#: 2048 popularity-sampled extra negatives.
V2 = {
    "v2 cross-entropy + sampling": ["--preset", "rsc15"],
    "v2 bpr-max + sampling": ["--preset", "retailrocket"],
}


def splits(name: str, tmp: Path) -> tuple[str, str]:
    """(train, test) files of a dataset."""
    if name == "rsc15-100k":
        return rsc15_sample()
    data = SHARED / "yoochoose1_64-srgnn"
    split = tmp / "split"
    srgnn_split(data, split)
    return str(split / "train_full.tsv.gz"), str(split / "test.tsv.gz")


def loss_flags(loss: str, units: int, n_epochs: int) -> list[str]:
    batch, dropout, lr, momentum = TABLE2_RSC15[loss]
    params = dict(loss=loss, layers=units, batch_size=batch, dropout_p_hidden=dropout,
                  dropout_p_embed=0.0, learning_rate=lr, momentum=momentum, n_sample=0,
                  elu_param=0.0, final_act="elu" if loss == "cross-entropy" else "tanh",
                  logq=0.0, bpreg=0.0, embedding=0,
                  constrained_embedding="false", n_epochs=n_epochs)  # fmt: skip
    return ["--model", "gru4rec", *(f for k, v in params.items() for f in ("--param", f"{k}={v}"))]


def row(label: str, flags: list[str], train: str, test: str, knn: dict | None) -> dict:
    print(f"  {label}", file=sys.stderr)
    result = {"label": label, **summary(nextclick("run", *flags, "--train", train, "--test", test))}
    if knn is not None:
        for metric in ("recall@20", "mrr@20"):
            result[f"{metric}_vs_item_knn_%"] = round(100 * (result[metric] / knn[metric] - 1), 2)
    return result


def dataset(name: str, n_epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        train, test = splits(name, Path(tmp))
        print(f"{name}:", file=sys.stderr)
        knn = row("item-knn", ["--model", "itemknn"], train, test, None)
        knn["published"] = PUBLISHED[("item-knn", 0)]
        rows = [knn]
        for units in (100, 1000):
            for loss in TABLE2_RSC15:
                result = row(f"{loss} {units}", loss_flags(loss, units, n_epochs), train, test,
                             knn)  # fmt: skip
                result["published"] = PUBLISHED[(loss, units)]
                rows.append(result)
        for label, flags in V2.items():
            flags = ["--model", "gru4rec", *flags, "--param", f"n_epochs={n_epochs}"]
            rows.append(row(label, flags, train, test, knn))
    return {"train": train, "test": test, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=("rsc15-100k", "yoochoose1_64"))
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = args.dataset or ["rsc15-100k", "yoochoose1_64"]
    record = {"benchmark": "gru4rec_2016_losses", "n_epochs": args.n_epochs,
              **{name: dataset(name, args.n_epochs) for name in names}}  # fmt: skip
    emit(record, args.out)


if __name__ == "__main__":
    main()
