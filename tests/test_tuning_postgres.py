"""One study in a real PostgreSQL server, as several machines would share it: two
`nextclick tune` processes work on it at once, a later run resumes it, and an unreachable
server is a one-line error. The server is a throw-away cluster on a free port."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from serving_helpers import free_port

from nextclick.cli import main

DATA = Path(__file__).resolve().parent.parent / "data" / "rsc15-100k"
TRAIN_TR = DATA / "yoochoose-clicks-100k_train_tr.txt.gz"
VALID = DATA / "yoochoose-clicks-100k_train_valid.txt.gz"


def _postgres_bin() -> Path:
    # Debian keeps the server programs out of PATH, under /usr/lib/postgresql/VERSION/bin.
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL is not installed: run `bash scripts/test-services.sh` "
            "(make test does) to install it"
        )
    return Path(initdb).parent


class PostgresServer:
    """A throw-away PostgreSQL cluster (trust authentication, loopback only, no fsync)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        # Not under pytest's tmp_path: its parents are private to root, and the server
        # (running as the postgres user) must reach its directory.
        self.directory = Path(tempfile.mkdtemp(prefix="nextclick-pg-"))
        self.data = self.directory / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://nextclick@127.0.0.1:{self.port}/optuna"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        # The server refuses to run as root; the Debian package's user runs it then.
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            log = self.directory / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}\n{tail}")

    def __enter__(self) -> PostgresServer:
        try:
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres", "postgres")
            # No locale: a machine's LANG may name a locale it has not generated.
            self._run("initdb", "-D", str(self.data), "-U", "nextclick", "-A", "trust",
                      "--no-sync", "--no-locale", "-E", "UTF8")  # fmt: skip
            self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.directory / "log"),
                      "-o", f"-p {self.port} -k {self.directory} "
                      "-c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "nextclick",
                      "optuna")  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def postgres():
    with PostgresServer() as server:
        yield server


def _tune(storage: str, trials: int, tmp_path: Path) -> list[str]:
    return [sys.executable, "-m", "nextclick.cli", "-q", "tune", "--model", "itemknn",
            "--train", str(TRAIN_TR), "--valid", str(VALID), "--space", "itemknn",
            "--trials", str(trials), "--storage", storage, "--study", "shared",
            "--run-dir", str(tmp_path / "runs"), "--best-params",
            str(tmp_path / "best.toml")]  # fmt: skip


def test_two_workers_share_a_postgresql_study_and_a_later_run_resumes_it(postgres, tmp_path):
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen(_tune(postgres.url, 10, tmp_path), stdout=subprocess.DEVNULL,
                                stderr=log.open("w")) for log in logs]  # fmt: skip
    try:
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(timeout=300) == 0, log.read_text()
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    trials = optuna.load_study(study_name="shared", storage=postgres.url).get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))  # each once, none missing
    assert 10 <= len(trials) <= 11  # a worker may start one more as the other ends the 10th
    assert {t.state.name for t in trials} == {"COMPLETE"}
    # The two workers really ran trials at the same time.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
    first = len(trials)
    done = subprocess.run(_tune(postgres.url, first + 2, tmp_path), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resumed = optuna.load_study(study_name="shared", storage=postgres.url).get_trials()
    assert [t.number for t in resumed] == list(range(first + 2))
    assert {t.state.name for t in resumed[first:]} == {"COMPLETE"}


def test_unreachable_postgresql_is_a_one_line_error(tmp_path, capsys):
    url = f"postgresql+psycopg2://nextclick@127.0.0.1:{free_port()}/optuna"
    code = main(["tune", "--model", "itemknn", "--train", str(TRAIN_TR), "--valid", str(VALID),
                 "--space", "itemknn", "--trials", "1", "--storage", url,
                 "--run-dir", str(tmp_path / "runs")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"nextclick: error: --storage {url}: OperationalError: ")
    assert "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
