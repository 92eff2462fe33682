"""How much of an SR-GNN or GCE-GNN training epoch goes to preparing the batches and building
their session graphs, on an SR-GNN benchmark split; prints one JSON object.

    python bench/graph_share.py [--data DIR] [--models srgnn,gcegnn] [--preset NAME]
        [--sessions 20000] [--out FILE]

Each model trains one epoch (its defaults; --preset applies to the models that have it) on the
first --sessions training sessions. Wall clocks around the batch preparation (each
``prefix_batches`` step: shuffled prefixes, padding) and around each batch's graph construction
(SR-GNN's ``SessionGraph``, GCE-GNN's ``ReversedGraph`` and ``NeighbourTree``) give their
share of the epoch's wall time. On the CPU every torch operation has finished when its call
returns, so the clocks time the work itself. Issue 12 measured the reference SR-GNN spending
about a fifth of each step on both (its graphs are built row by row in Python).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from common import SHARED, emit, srgnn_split

from nextclick.data import ItemIndex, encode_sessions, read_events
from nextclick.models import create_model, gcegnn, model_class, neural, srgnn


class Clock:
    """Seconds spent inside the wrapped calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def batches(self, make_batches):
        def timed(*args, **kwargs) -> Iterator:
            steps = iter(make_batches(*args, **kwargs))
            while True:
                started = time.perf_counter()
                batch = next(steps, None)
                self.seconds += time.perf_counter() - started
                if batch is None:
                    return
                yield batch

        return timed

    def graph(self, graph_class: type) -> type:
        clock = self

        class Timed(graph_class):
            def __init__(self, *args, **kwargs) -> None:
                started = time.perf_counter()
                super().__init__(*args, **kwargs)
                clock.seconds += time.perf_counter() - started

        return Timed


# The classes that build each model's batch graphs (GCE-GNN: the session graph and the
# neighbour tree's indices).
GRAPHS = {"srgnn": (srgnn, ("SessionGraph",)),
          "gcegnn": (gcegnn, ("ReversedGraph", "NeighbourTree"))}  # fmt: skip


def measure(name: str, preset: str | None, train, index: ItemIndex) -> dict:
    module, graph_names = GRAPHS[name]
    batch_clock, graph_clock = Clock(), Clock()
    make_batches = neural.prefix_batches
    graph_classes = {g: getattr(module, g) for g in graph_names}
    neural.prefix_batches = batch_clock.batches(make_batches)
    for g, graph_class in graph_classes.items():
        setattr(module, g, graph_clock.graph(graph_class))
    try:
        params = [model_class(name).preset(preset)] if preset else []
        model = create_model(name, *params, {"n_epochs": 1})
        sessions = encode_sessions(train, index).sessions
        started = time.perf_counter()
        model.fit(sessions, index)
        fit = time.perf_counter() - started
    finally:
        neural.prefix_batches = make_batches
        for g, graph_class in graph_classes.items():
            setattr(module, g, graph_class)
    epoch = model.history_[0].seconds
    both = batch_clock.seconds + graph_clock.seconds
    return {
        "preset": preset,
        # The epoch, and what fit builds once: the network, GCE-GNN's global graph.
        "fit_seconds": round(fit, 2),
        "epoch_seconds": round(epoch, 2),
        "batch_preparation_seconds": round(batch_clock.seconds, 2),
        "graph_construction_seconds": round(graph_clock.seconds, 2),
        "batch_share": round(batch_clock.seconds / epoch, 4),
        "graph_share": round(graph_clock.seconds / epoch, 4),
        "preparation_and_graph_share": round(both / epoch, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "diginetica-srgnn")
    parser.add_argument("--models", default="srgnn,gcegnn")
    parser.add_argument("--preset")
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srgnn_split(args.data, tmp)
        train = read_events(Path(tmp) / "train_full.tsv.gz")
    first = train["SessionId"].drop_duplicates().iloc[: args.sessions]
    train = train[train["SessionId"].isin(first)]
    index = ItemIndex.from_items(train["ItemId"].to_numpy())
    record: dict = {"benchmark": "graph_share", "data": str(args.data),
                    "sessions": int(first.size), "events": len(train),
                    "torch_threads": torch.get_num_threads(), "models": {}}  # fmt: skip
    names = args.models.split(",")
    for name in names:
        if name not in GRAPHS:
            raise SystemExit(f"--models: {name!r} is not one of {', '.join(GRAPHS)}")
    if args.preset and not any(args.preset in model_class(n).presets for n in names):
        raise SystemExit(f"--preset {args.preset}: not a preset of {args.models}")
    for name in names:
        print(f"{name}...", file=sys.stderr)
        preset = args.preset if args.preset in model_class(name).presets else None
        record["models"][name] = measure(name, preset, train, index)
    emit(record, args.out)


if __name__ == "__main__":
    main()
