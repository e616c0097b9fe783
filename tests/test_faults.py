"""Faults a long study meets in its storage: a disk that fills up or turns read-only mid-run, an
object store that stops answering, damaged results files. Each ends the run with one line, leaves
no temporary file, and the next `ablate run` completes the grid: nothing lost, nothing trained twice.

The disks are real tmpfs mounts (the tests run as root; skipped where mounting is not allowed).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, ablate
from tests.results_fixture import RULES_GRID, rules_result, write_run
from tests.runs import executions, probe_grid, trials
from tests.test_storage_s3 import CREDENTIALS, moto_s3

ABLATE = [str(Path(sys.executable).parent / "ablate")]


@pytest.fixture
def disk(tmp_path):
    """A small tmpfs of its own: `disk.remount("ro")`, `disk.remount("size=4m")`."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    class Disk:
        root = path

        @staticmethod
        def remount(options: str) -> None:
            subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)

        @staticmethod
        def free_kb() -> int:
            stat = os.statvfs(path)
            return stat.f_bavail * stat.f_frsize // 1024

    yield Disk
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def leftovers(root: Path) -> list[str]:
    """Temporary files a write left behind."""
    return [str(p) for p in root.rglob("*.tmp")]


def one_line(result) -> str:
    (line,) = result.stderr.strip().splitlines()
    return line


def finished_keys(run_dir: Path) -> set[str]:
    rows = trials(run_dir) if (run_dir / "trials.parquet").exists() else None
    if rows is None:
        return set()
    return {f"lr{r.lr}-seed{r.seed}-{r.fail}" for r in rows.itertuples() if r.status == "completed"}


def test_a_disk_that_fills_up_stops_the_run_and_the_next_run_completes(tmp_path, disk):
    # Room for the run's own files and two checkpoints of 256 kB: the third does not fit.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 3, "ballast": 256},
                      max_failures=3)
    result = ablate("run", path, "--storage", disk.root, "--quiet")
    assert result.returncode == 1
    assert one_line(result) == (f"error: {disk.root / 'probe'}: cannot write there (No space left on device); "
                                "what finished is kept: run the same command again once it can be written")
    assert "failed" not in result.stdout  # the disk's fault, not the trials': no failure, no retry used up
    assert leftovers(disk.root) == []
    done = finished_keys(disk.root / "probe")
    starts_before = len(executions(tmp_path))

    disk.remount("size=16m")
    again = ablate("run", path, "--storage", disk.root, "--quiet")
    assert again.returncode == 0, again.stderr
    assert set(trials(disk.root / "probe")["status"]) == {"completed"} and len(trials(disk.root / "probe")) == 4
    restarted = [key for key, epoch, _ in executions(tmp_path)[starts_before:] if key in done]
    assert restarted == []  # what had finished is not trained again


def test_a_disk_already_full_when_the_run_takes_its_lock_is_the_same_one_line(tmp_path, disk):
    # The lock is the run's first write: its error lacked what every other full-disk error says.
    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 1})
    (disk.root / "filler").write_bytes(b"x" * disk.free_kb() * 1024)
    result = ablate("run", path, "--storage", disk.root, "--quiet")
    assert result.returncode == 1
    assert one_line(result) == (f"error: {disk.root / 'probe'}: cannot write there (No space left on device); "
                                "what finished is kept: run the same command again once it can be written")
    assert executions(tmp_path) == []


def test_a_disk_that_fills_up_under_tunes_own_files_stops_the_run_in_one_line(tmp_path, disk):
    # Filled while trials report, the disk leaves Tune's files of a trial's error empty too; Tune
    # read them back as the run ended and the driver died with click's bare "Aborted.".
    disk.remount("size=4m")
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 2000, "sleep": 0.004, "checkpoint_every": 50},
                      max_failures=0)
    driver = subprocess.Popen([*ABLATE, "run", path, "--storage", disk.root, "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(disk.root.glob("probe/trials/*/epochs.jsonl"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (disk.root / "filler").write_bytes(b"x" * ((disk.free_kb() - 16) * 1024))
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {disk.root / 'probe'}: cannot ") and "run the same command again" in line

    (disk.root / "filler").unlink()
    again = ablate("run", path, "--storage", disk.root, "--quiet")
    assert again.returncode == 0, again.stderr
    assert list(trials(disk.root / "probe")["status"]) == ["completed", "completed"]


def read_only(directory: Path, on: bool = True) -> None:
    """Every folder under `directory` made immutable (chattr +i, which holds for root too, where
    chmod does not): nothing can be created, renamed or removed there, as on a read-only disk."""
    folders = [str(p) for p in [directory, *directory.rglob("*")] if p.is_dir()]
    subprocess.run(["chattr", "+i" if on else "-i", *folders], check=True, capture_output=True)


def test_a_directory_made_read_only_mid_run_stops_it_and_the_next_run_completes(tmp_path):
    storage = tmp_path / "runs"
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 4, "sleep": 0.5})
    probe = subprocess.run(["chattr", "+i", str(tmp_path / "markers")], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no immutable folders on this filesystem: {probe.stderr.decode().strip()}")
    subprocess.run(["chattr", "-i", str(tmp_path / "markers")], check=True)
    driver = subprocess.Popen([*ABLATE, "run", path, "--storage", storage, "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((storage / "probe" / "records").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        read_only(storage)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
        read_only(storage, on=False)
    assert driver.returncode == 1, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {storage / 'probe'}: cannot write there (Operation not permitted); ")
    assert leftovers(storage) == []
    done = finished_keys(storage / "probe")
    starts_before = len(executions(tmp_path))

    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(trials(storage / "probe")) == 4
    restarted = [key for key, epoch, _ in executions(tmp_path)[starts_before:] if key in done]
    assert restarted == []


def test_a_trial_that_fails_while_its_record_cannot_be_written_stops_the_run_in_one_line(tmp_path):
    # The driver writes a failed trial's record: where that write fails, the run stops as when a
    # trial's own write does (one line), instead of Tune's traceback from inside its callback.
    storage = tmp_path / "runs"
    records = storage / "probe" / "records"
    records.mkdir(parents=True)
    path = probe_grid(tmp_path, axes={"fail": ["always", "never"]}, fixed={"epochs": 4, "sleep": 1.0},
                      max_failures=0)
    probe = subprocess.run(["chattr", "+i", str(records)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no immutable folders on this filesystem: {probe.stderr.decode().strip()}")
    try:
        result = ablate("run", path, "--storage", storage, "--quiet")
    finally:
        read_only(records, on=False)
    assert result.returncode == 1
    assert one_line(result) == (f"error: {storage / 'probe'}: cannot write there (Operation not permitted); "
                                "what finished is kept: run the same command again once it can be written")

    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 1  # the trial that always fails is recorded now, as failed
    assert dict(zip(trials(storage / "probe")["fail"], trials(storage / "probe")["status"])) == {
        "always": "failed", "never": "completed"}


def test_an_object_store_that_stops_answering_stops_the_run_and_the_next_run_completes(tmp_path, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server, client, query = moto_s3()
    client.create_bucket(Bucket="results")
    port = server.get_host_and_port()[1]
    storage = f"s3://results/studies?{query}"
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 4, "sleep": 0.5})
    env = {**os.environ, "ABLATE_LOCK_STALE_S": "10", "ABLATE_LOCK_HEARTBEAT_S": "1"}
    driver = subprocess.Popen([*ABLATE, "run", path, "--storage", storage, "--quiet"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not client.list_objects_v2(
                Bucket="results", Prefix="studies/probe/records/").get("KeyCount"):
            time.sleep(0.2)
        server.stop()  # the store stops answering
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, err
    *notes, line = err.strip().splitlines()  # a note may come first (the lock's heartbeat failing)
    assert "Traceback" not in err and all(note.startswith("note: ") for note in notes), err
    assert line.startswith("error: s3://results/studies/probe: cannot ") and "run the same command again" in line

    server, _, _ = moto_s3(port)  # back, with what it held
    try:
        listed = client.list_objects_v2(Bucket="results", Prefix="studies/probe/records/")
        done = {obj["Key"].rsplit("/", 1)[-1].removesuffix(".json") for obj in listed.get("Contents", [])}
        starts_before = len(executions(tmp_path))
        again = ablate("run", path, "--storage", storage, "--quiet", "--wait", env={"ABLATE_LOCK_STALE_S": "10"})
        assert again.returncode == 0, again.stderr
        assert "4 completed" in again.stdout
        rows = ablate("summarize", "s3://results/studies/probe?" + storage.split("?")[1], "-f", "json")
        assert rows.returncode == 0, rows.stderr
        assert len(executions(tmp_path)) - starts_before <= 4 - len(done) + 1  # the finished ones did not run again
    finally:
        server.stop()


def test_damaged_results_files_are_read_past_and_written_again(tmp_path):
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3]}, fixed={"epochs": 2})
    storage = tmp_path / "runs"
    assert ablate("run", path, "--storage", storage, "--quiet").returncode == 0
    run_dir = storage / "probe"
    (run_dir / "trials.parquet").write_bytes(b"garbage from a half copy")
    damaged = sorted((run_dir / "records").glob("*.json"))[0]
    damaged.write_bytes(damaged.read_bytes()[:80])  # cut off

    summary = ablate("summarize", run_dir, "-f", "csv", "--trust-workload")  # tests.probe is not registered
    assert summary.returncode == 0, summary.stderr
    notes = summary.stderr.splitlines()
    assert notes[0].startswith(f"note: {run_dir / 'trials.parquet'}: unreadable Parquet (")
    assert notes[0].endswith(": read from the trials' records instead")
    assert notes[1].startswith(f"note: {damaged}: unreadable record (")
    assert notes[1].endswith("its trial counts as unfinished and runs again at the next `ablate run`")

    starts_before = len(executions(tmp_path))
    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 0, again.stderr
    assert "3 completed (1 run now, 2 already done)" in again.stdout
    assert len(executions(tmp_path)) - starts_before == 1  # only the trial whose record was damaged
    assert len(trials(run_dir)) == 3  # trials.parquet written again, readable
    assert ablate("summarize", run_dir, "-f", "csv", "--trust-workload").stderr == ""


def test_a_damaged_grid_yaml_is_named_in_a_note_where_the_run_is_shown_without_it(tmp_path):
    # A grid.yaml cut short was read past in silence: status dropped the trials still to run, and
    # summarize of a script's run said "no trial has a value of test_error (metrics: none)".
    run_dir = tmp_path / "rules"
    write_run(run_dir, RULES_GRID, rules_result)
    grid = run_dir / "grid.yaml"
    grid.write_text(RULES_GRID.split("32, 64]")[0])  # a copy cut short
    note = (f"note: {grid}: not valid YAML at line 9, column 1: did not find expected node content; "
            "the run is shown without its grid")
    for command in ("status", "summarize"):
        shown = ablate(command, run_dir)
        assert shown.stderr.splitlines()[0] == note, shown.stderr
