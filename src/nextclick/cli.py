"""The ``nextclick`` command line: parses, calls the library, prints.

User mistakes (bad files, unknown parameters) print one ``nextclick: error: ...`` line and
exit with code 2; machine-readable output (``--json``) is one JSON object on stdout, with
everything meant for people on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nextclick import __version__
from nextclick.errors import ConfigError, NextclickError

log = logging.getLogger("nextclick")


def _columns_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input columns")
    group.add_argument("--session-key", default="SessionId", help="session column (SessionId)")
    group.add_argument("--item-key", default="ItemId", help="item column (ItemId)")
    group.add_argument("--time-key", default=None, help="time or position column (Time, else Pos)")


def _eval_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--cutoffs", type=int, nargs="+", default=[1, 5, 10, 20], metavar="K")
    group.add_argument(
        "--ties", choices=["conservative", "standard", "median"], default="conservative"
    )
    group.add_argument(
        "--exclude-seen", action="store_true", help="never recommend items already clicked"
    )


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (the torch models; default cpu)"
    )


def _param_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", metavar="NAME",
        help="a published setting of the model (gru4rec: rsc15, yoochoose, rees46, coveo, "
        "retailrocket, diginetica; stamp: yoochoose1_64, yoochoose1_4, diginetica; gcegnn: "
        "diginetica, tmall, nowplaying; --params and --param override it)",
    )  # fmt: skip
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="model parameter, repeatable (lists as 200/200 or [200,200])",
    )  # fmt: skip
    parser.add_argument("--params", type=Path, metavar="FILE.toml", help="parameters file")


def _checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, metavar="DIR",
                        help="save the training state here after each epoch; the same "
                        "command run again resumes from it (the torch models)")  # fmt: skip


def _label_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label", help="name of the run record and of its row in reports "
                        "(default: the model, with :PRESET when one is given)")  # fmt: skip


def _run_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path,
                        default=Path(os.environ.get("NEXTCLICK_RUN_DIR", "runs")),
                        help="run records go here (runs/ or $NEXTCLICK_RUN_DIR)")  # fmt: skip


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextclick", description="Session-based recommendation: train, evaluate, compare."
    )
    parser.add_argument("--version", action="version", version=f"nextclick {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-epoch log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="raw dataset -> train_full/test/train_tr/train_valid")
    p.add_argument("recipe", help="rsc15, yoochoose, diginetica, retailrocket, rees46, coveo, "
                   "otto or srgnn-benchmark")  # fmt: skip
    p.add_argument("raw", nargs="+", type=Path, help="raw input file(s)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    _json_arg(p)

    p = sub.add_parser("synth", help="a synthetic click log for speed and memory benchmarks "
                       "(never for accuracy claims)")  # fmt: skip
    p.add_argument("--events", type=int, required=True, help="clicks in the log")
    p.add_argument("--items", type=int, required=True, help="items in the catalogue")
    p.add_argument("--format", choices=("tsv", "yoochoose"), default="tsv",
                   help="tsv: SessionId/ItemId/Time; yoochoose: the raw RSC15 layout")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="file to write")
    _json_arg(p)

    p = sub.add_parser("stats", help="events, sessions, items, lengths and time span of a file")
    p.add_argument("file", type=Path)
    _columns_args(p)
    _json_arg(p)

    p = sub.add_parser("train", help="train a model and save it as a directory")
    p.add_argument("--model", required=True)
    p.add_argument("--train", type=Path, required=True, help="training events")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    _param_args(p)
    _device_arg(p)
    _checkpoint_arg(p)
    _columns_args(p)
    _label_arg(p)
    _run_dir_arg(p)
    _json_arg(p)

    p = sub.add_parser("evaluate", help="next-item evaluation of a saved model")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True, help="test events")
    _device_arg(p)
    _eval_args(p)
    _columns_args(p)
    _json_arg(p)

    p = sub.add_parser("run", help="train, then evaluate (save only with --out)")
    p.add_argument("--model", required=True)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--out", type=Path, help="also save the model directory")
    _param_args(p)
    _device_arg(p)
    _checkpoint_arg(p)
    _eval_args(p)
    _columns_args(p)
    _label_arg(p)
    _run_dir_arg(p)
    _json_arg(p)

    p = sub.add_parser("compare", help="train and evaluate several models; print one table")
    p.add_argument(
        "--models", required=True,
        help="comma-separated model names; gru4rec:PRESET for a published setting",
    )  # fmt: skip
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    _device_arg(p)
    _eval_args(p)
    _columns_args(p)
    _json_arg(p)

    p = sub.add_parser("tune", help="search parameters with Optuna on a validation split")
    p.add_argument("--model", required=True)
    p.add_argument("--train", type=Path, required=True, help="training events (train_tr)")
    p.add_argument("--valid", type=Path, required=True, help="validation events (train_valid)")
    p.add_argument("--space", required=True,
                   help="parameter space: a TOML file or a built-in one (gru4rec-cross-entropy, "
                        "gru4rec-bpr-max, itemknn, sknn, vsknn)")  # fmt: skip
    p.add_argument("--preset", metavar="NAME",
                   help="a published setting of the model that every trial starts from (the "
                        "first trial takes its values of the searched parameters)")  # fmt: skip
    p.add_argument("--trials", type=int, help="stop when the study holds this many trials")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="end the study after this long (a running trial ends after its epoch)")
    p.add_argument("--metric", default="mrr@20", help="what to maximise (mrr@20)")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite in runs/tune/)")
    p.add_argument("--study", help="study name (default MODEL-SPACE[-PRESET]); an existing one "
                   "resumes")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed of the TPE sampler")
    p.add_argument("--best-params", type=Path, help="where to write the best parameters (TOML)")
    p.add_argument("--final-train", type=Path, help="retrain on this file with the best")
    p.add_argument("--final-test", type=Path, help="... and evaluate on this one")
    _device_arg(p)
    _eval_args(p)
    _columns_args(p)
    _run_dir_arg(p)
    _json_arg(p)

    p = sub.add_parser("benchmark", help="tune, retrain and test several models on a dataset, "
                       "then report: which is best, and by how much")  # fmt: skip
    p.add_argument("data", type=Path, metavar="DATA_DIR",
                   help="the four splits of `nextclick prepare` (train_full, test, train_tr, "
                        "train_valid)")  # fmt: skip
    p.add_argument("--models", required=True,
                   help="comma-separated models, each tuned in its built-in space; or a "
                        "built-in space (gru4rec-bpr-max) or a space file (my.toml); "
                        "MODEL:PRESET (gcegnn:tmall) starts from a published setting")
    p.add_argument("--budget", required=True,
                   help="tuning time of all models together: 2h, 90m, 1h30m or seconds; a "
                        "neural model gets 4 shares, a kNN model 1")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="results, records and report")
    p.add_argument("--storage", help="Optuna storage URL shared by several machines "
                   "(default: SQLite in OUT)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed of the TPE samplers")
    _device_arg(p)
    _json_arg(p)

    p = sub.add_parser("report", help="HTML page and Markdown table comparing run records")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run record directories")
    p.add_argument("--out", type=Path, required=True, help="report directory to write")

    p = sub.add_parser("serve", help="real-time HTTP service over a saved model")
    p.add_argument("model_dir", type=Path, help="model directory (from train or run --out)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1,
                   help="service processes (more than 1 needs --state redis://...)")  # fmt: skip
    p.add_argument("--state", default="memory", metavar="URL",
                   help="session store: memory (default) or redis://HOST:PORT[/DB]")  # fmt: skip
    p.add_argument("--admin-token", default=None,
                   help="bearer token of the admin endpoints; better NEXTCLICK_ADMIN_TOKEN, "
                        "as a command line shows in ps; without one they are disabled")  # fmt: skip
    p.add_argument("--session-ttl", type=float, default=1800.0, metavar="SECONDS",
                   help="a session expires after this long without use (1800)")  # fmt: skip
    p.add_argument("--session-memory", type=int, default=1024, metavar="MB",
                   help="bound of the in-process session store (1024)")  # fmt: skip
    return parser


def _columns(args: argparse.Namespace) -> Any:
    from nextclick.data import EventColumns

    return EventColumns(args.session_key, args.item_key, args.time_key)


def _params(args: argparse.Namespace) -> list[dict[str, Any]]:
    from nextclick.config import parse_overrides, read_toml

    layers = [_preset(args.model, args.preset)] if args.preset else []
    if args.params:
        layers.append(read_toml(args.params))
    layers.append(parse_overrides(args.param))
    return layers


def _preset(model: str, preset: str) -> dict[str, Any]:
    from nextclick.models import model_class

    return model_class(model).preset(preset)


def _cutoffs(args: argparse.Namespace) -> tuple[int, ...]:
    if any(k < 1 for k in args.cutoffs):
        raise NextclickError(f"--cutoffs: expected positive integers, got {args.cutoffs}")
    return tuple(args.cutoffs)


def _emit(args: argparse.Namespace, record: dict[str, Any], human: str) -> None:
    if args.json:
        print(human, file=sys.stderr)
        print(json.dumps(record, default=str))
    else:
        print(human)


def _metric_lines(record: dict[str, Any]) -> str:
    metrics = record["metrics"]
    lines = [
        f"{record['model']}: {record['n_targets']} targets, {record['n_dropped_unknown']} test "
        f"events of unknown items dropped, ties={record['ties']}"
    ]
    lines += [f"  {key:<16} {value:.4f}" for key, value in metrics.items()]
    return "\n".join(lines)


def cmd_prepare(args: argparse.Namespace) -> None:
    from nextclick.data.recipes import prepare

    report = prepare(args.recipe, args.raw, args.out)
    human = "\n".join(report.lines())
    record = {"recipe": args.recipe, "out": str(args.out), "report": dataclasses.asdict(report)}
    _emit(args, record, human)


def cmd_synth(args: argparse.Namespace) -> None:
    from nextclick.data.io import label_path
    from nextclick.data.synth import SynthConfig, synthesize

    label = synthesize(SynthConfig(args.events, args.items, args.format, args.seed), args.out)
    human = (f"wrote {args.out}: {args.events} clicks, {label['sessions']} sessions, "
             f"{args.items} items, SYNTHETIC (label: {label_path(args.out)})")  # fmt: skip
    _emit(args, {"out": str(args.out), **label}, human)


def cmd_stats(args: argparse.Namespace) -> None:
    from nextclick.data import read_events
    from nextclick.data.stats import describe, format_stats

    stats = describe(read_events(args.file, _columns(args)))
    _emit(args, {"file": str(args.file), **stats}, format_stats(stats))


def cmd_train(args: argparse.Namespace) -> None:
    from nextclick.api import train
    from nextclick.training import distributed

    trained = train(
        args.model, args.train, *_params(args), columns=_columns(args), device=args.device,
        progress=args.progress, checkpoint=args.checkpoint,
    )  # fmt: skip
    record = {
        "model": args.model,
        "train_file": str(args.train),
        "out": str(args.out),
        "train_seconds": trained.train_seconds,
        **trained.training_record(),
    }
    group = distributed.current()
    if group is not None:  # the epochs' figures are the job's, all ranks together
        record["world_size"] = group.world_size
        if not group.is_main:  # rank 0 alone writes the model and the record
            return
    trained.model.save(
        args.out, {"train_file": str(args.train), "train_seconds": trained.train_seconds}
    )
    _record(args, "train", trained.model, record)
    _emit(args, record, f"trained {args.model} in {trained.train_seconds:.1f} s -> {args.out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from nextclick.api import evaluate_file, result_record
    from nextclick.models import load_model
    from nextclick.models.base import read_model_meta

    model = load_model(args.model_dir).to(args.device)
    provenance = read_model_meta(args.model_dir).get("provenance", {})
    result = evaluate_file(
        model, args.test, columns=_columns(args), cutoffs=_cutoffs(args), ties=args.ties,
        exclude_seen=args.exclude_seen, progress=args.progress,
    )  # fmt: skip
    record = result_record(
        model.name, provenance.get("train_file"), args.test, result,
        provenance.get("train_seconds"),
    )  # fmt: skip
    _emit(args, record, _metric_lines(record))


def _train_and_evaluate(
    args: argparse.Namespace, name: str, params: list[dict[str, Any]], label: str | None = None,
    checkpoint: Path | None = None,
):
    from nextclick.api import evaluate_file, result_record, train

    cutoffs = _cutoffs(args)
    trained = train(
        name, args.train, *params, columns=_columns(args), device=args.device,
        progress=args.progress, checkpoint=checkpoint,
    )  # fmt: skip
    result = evaluate_file(
        trained.model, args.test, columns=_columns(args), cutoffs=cutoffs, ties=args.ties,
        exclude_seen=args.exclude_seen, progress=args.progress,
    )  # fmt: skip
    record = result_record(label or name, str(args.train), args.test, result, trained.train_seconds)
    record.update(trained.training_record())
    return trained, result, record


def _record(args: argparse.Namespace, kind: str, model: Any, record: dict[str, Any],
            result: Any = None) -> None:  # fmt: skip
    """Write the run record (see nextclick.records)."""
    from nextclick.records import config_dict, curves, environment, write_record

    config = config_dict(model)
    extra = {"config": config, "model_name": model.name,
             "environment": environment(args.device, config.get("seed"))}  # fmt: skip
    if result is not None:
        extra["curves"] = curves(result)
    label = args.label or (f"{args.model}:{args.preset}" if args.preset else args.model)
    write_record(args.run_dir, kind, label, {**record, **extra})


def cmd_run(args: argparse.Namespace) -> None:
    trained, result, record = _train_and_evaluate(args, args.model, _params(args),
                                                  checkpoint=args.checkpoint)  # fmt: skip
    if args.out:
        trained.model.save(
            args.out, {"train_file": str(args.train), "train_seconds": trained.train_seconds}
        )
    _record(args, "run", trained.model, record, result)
    _emit(args, record, _metric_lines(record))


def cmd_compare(args: argparse.Namespace) -> None:
    from nextclick.models import model_class

    labels = [n.strip() for n in args.models.split(",") if n.strip()]
    if not labels:
        raise NextclickError("--models: expected a comma-separated list of model names")
    runs = []
    for label in labels:  # resolve everything first: fail on a typo before training
        name, _, preset = label.partition(":")
        model_class(name)
        runs.append((label, name, [_preset(name, preset)] if preset else []))
    records = []
    for label, name, params in runs:
        log.info("training and evaluating %s", label)
        records.append(_train_and_evaluate(args, name, params, label)[2])
    table = comparison_table(records, _cutoffs(args))
    record = {
        "train_file": str(args.train),
        "test_file": str(args.test),
        "ties": args.ties,
        "results": records,
    }
    _emit(args, record, table)


def comparison_table(records: list[dict[str, Any]], cutoffs: tuple[int, ...]) -> str:
    """A fixed-width table: one row per model, Recall@K and MRR@K columns, then timings."""
    keys = [f"recall@{k}" for k in cutoffs] + [f"mrr@{k}" for k in cutoffs]
    headers = ["model", *[k.replace("recall", "Recall").replace("mrr", "MRR") for k in keys]]
    headers += ["train s", "eval s"]
    rows = [
        [
            r["model"],
            *[f"{r['metrics'][k]:.4f}" for k in keys],
            f"{r['train_seconds']:.1f}",
            f"{r['eval_seconds']:.1f}",
        ]
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    if records:
        r = records[0]
        lines.append(
            f"ties={r['ties']}; {r['n_targets']} targets; {r['n_dropped_unknown']} test events "
            "of items unknown to training dropped"
        )
    return "\n".join(lines)


def cmd_tune(args: argparse.Namespace) -> None:
    from nextclick.api import evaluate_file, result_record, train, tune
    from nextclick.records import curves

    if (args.final_train is None) != (args.final_test is None):
        raise NextclickError("--final-train and --final-test go together")
    if args.trials is not None and args.trials < 1:
        raise NextclickError(f"--trials {args.trials}: expected an integer >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise NextclickError(f"--timeout {args.timeout}: expected seconds > 0")
    result = tune(
        args.model, args.train, args.valid, args.space, metric=args.metric, trials=args.trials,
        timeout=args.timeout, storage=args.storage, study_name=args.study,
        best_params_file=args.best_params, seed=args.seed, device=args.device,
        columns=_columns(args), preset=args.preset,
    )  # fmt: skip
    record = result.record()
    counts = sorted(record["trial_states"].items())
    states = ", ".join(f"{n} {state.lower()}" for state, n in counts)
    human = [
        f"study {result.study_name}: {len(result.trials)} trials ({states}); best "
        f"{args.metric} {result.best_value:.4f} -> {result.best_params_file}",
        *(f"  {key} = {value}" for key, value in result.best_params.items()),
    ]
    if args.final_train is not None:
        trained = train(args.model, args.final_train, result.best_params, columns=_columns(args),
                        device=args.device, progress=args.progress)  # fmt: skip
        final = evaluate_file(
            trained.model, args.final_test, columns=_columns(args), cutoffs=_cutoffs(args),
            ties=args.ties, exclude_seen=args.exclude_seen, progress=args.progress,
        )  # fmt: skip
        record["final"] = result_record(args.model, str(args.final_train), args.final_test,
                                        final, trained.train_seconds)  # fmt: skip
        record["final"].update(trained.training_record())
        record["final"]["curves"] = curves(final)
        human.append(_metric_lines(record["final"]))
    from nextclick.models import create_model
    from nextclick.records import config_dict, environment, write_record

    config = config_dict(create_model(args.model, result.best_params))
    write_record(args.run_dir, "tune", result.study_name, {
        "model": args.model, "model_name": args.model, "metric": args.metric,
        "train_file": str(args.train), "valid_file": str(args.valid), "config": config,
        "environment": environment(args.device, args.seed), **record,
    })  # fmt: skip
    _emit(args, record, "\n".join(human))


def cmd_benchmark(args: argparse.Namespace) -> None:
    from nextclick.benchmark import parse_budget, run_benchmark

    labels = [n.strip() for n in args.models.split(",") if n.strip()]
    state = run_benchmark(args.data, labels, parse_budget(args.budget), args.out,
                          storage=args.storage, seed=args.seed, device=args.device)  # fmt: skip
    summary = (args.out / "results.md").read_text(encoding="utf-8")
    _emit(args, state, f"{summary}\nreport: {args.out / 'report' / 'index.html'}")


def cmd_report(args: argparse.Namespace) -> None:
    from nextclick.report import expand_runs, write_report

    out = write_report(args.runs, args.out)
    print(f"report of {len(expand_runs(args.runs))} runs -> {out / 'index.html'}",
          file=sys.stderr)  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> None:
    from nextclick.serving.server import serve

    serve(args.model_dir, host=args.host, port=args.port, workers=args.workers,
          state=args.state, admin_token=args.admin_token, ttl=args.session_ttl,
          session_memory_mb=args.session_memory)  # fmt: skip


COMMANDS = {
    "prepare": cmd_prepare,
    "synth": cmd_synth,
    "stats": cmd_stats,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "run": cmd_run,
    "compare": cmd_compare,
    "tune": cmd_tune,
    "benchmark": cmd_benchmark,
    "report": cmd_report,
    "serve": cmd_serve,
}


def _print_error(exc: NextclickError) -> None:
    """One line; under torchrun, bad input fails every rank alike and rank 0 alone says so,
    while any other failure is said by the rank it happened on."""
    from nextclick.errors import DataError
    from nextclick.training import distributed

    rank = int(os.environ.get("RANK", "0")) if distributed.world_size_from_env() > 1 else 0
    if rank == 0:
        print(f"nextclick: error: {exc}", file=sys.stderr)
    elif not isinstance(exc, (DataError, ConfigError)):
        print(f"nextclick: error: rank {rank}: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _process_group(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun (WORLD_SIZE > 1): join the other processes for ``train``."""
    from nextclick.training import distributed

    if distributed.world_size_from_env() <= 1:
        yield
        return
    if args.command != "train":
        raise ConfigError(f"only 'nextclick train' runs under torchrun, not {args.command!r}")
    from nextclick.models import model_class

    if not model_class(args.model).trains_distributed:
        raise ConfigError(
            f"{args.model} trains in one process only; data-parallel training (torchrun) "
            "is for gru4rec and the neural models"
        )
    from nextclick.models.neural import resolve_device

    group = distributed.init_from_env(resolve_device(args.device))
    if group is not None and not group.is_main:  # one log and one progress bar: rank 0's
        logging.getLogger("nextclick").setLevel(logging.WARNING)
        args.progress = False
    try:
        yield
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("nextclick").setLevel(logging.WARNING if args.quiet else logging.INFO)
    args.progress = sys.stderr.isatty() and not getattr(args, "json", False)
    try:
        if args.command in ("train", "run", "tune", "benchmark"):
            from nextclick.records import git_commit

            git_commit()  # now, before hours of training: the record names this code
        with _process_group(args):
            COMMANDS[args.command](args)
    except NextclickError as exc:
        _print_error(exc)
        return 2
    except KeyboardInterrupt:
        print("nextclick: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
