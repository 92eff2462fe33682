"""One study in a real PostgreSQL server, as several machines would share it: two
`nextclick tune` processes work on it at once, a later run resumes it, and an unreachable
server is a one-line error. The server is a throw-away cluster on a free port."""

from __future__ import annotations

import glob
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
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")

    def __enter__(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "nextclick", "-A", "trust", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.directory / "log"),
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")  # fmt: skip
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "nextclick",
                  "optuna")  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        try:
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
    workers = [subprocess.Popen(_tune(postgres.url, 10, tmp_path), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=postgres.url)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))  # each once, none missing
    assert 10 <= len(trials) <= 11  # a worker may start one more as the other ends the 10th
    assert {t.state.name for t in trials} == {"COMPLETE"}
    first = len(trials)
    done = subprocess.run(_tune(postgres.url, first + 2, tmp_path), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resumed = optuna.load_study(study_name="shared", storage=postgres.url).get_trials()
    assert [t.number for t in resumed] == list(range(first + 2))
    assert [t.params for t in resumed[:first]] == [t.params for t in trials]


def test_unreachable_postgresql_is_a_one_line_error(tmp_path, capsys):
    url = f"postgresql+psycopg2://nextclick@127.0.0.1:{free_port()}/optuna"
    code = main(["tune", "--model", "itemknn", "--train", str(TRAIN_TR), "--valid", str(VALID),
                 "--space", "itemknn", "--trials", "1", "--storage", url,
                 "--run-dir", str(tmp_path / "runs")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"nextclick: error: --storage {url}: OperationalError: ")
    assert "Connection refused" in err and "\n" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
