"""One driver per run (orchestrator/run/lock.py): two `ablate run` of one grid at once, drivers
racing to take over a hold whose heartbeat stopped, on a local path and on S3 (moto's server), and
holds judged by their process: one on this machine that has ended, a copy of a held run directory,
and a holder on another machine that shares this one's hostname and pid.

The SIGKILL-then-run-again case is in test_run_cli.py, with the other driver kills.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import boto3
import botocore.endpoint
import pytest
from botocore.exceptions import ReadTimeoutError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from orchestrator.errors import RunError
from orchestrator.run.lock import DriverLock, RunLocked
from orchestrator.run.processes import this_process
from orchestrator.store.rundir import RunDir
from tests.conftest import ROOT, ablate
from tests.runs import probe_grid, starts, trials

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_for(condition, timeout=30.0, every=0.02):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {condition.__name__}"
        time.sleep(every)
    return value


@pytest.fixture
def s3_run(monkeypatch):
    """A run directory on a moto S3 server that handles one request at a time.

    moto checks a PUT's If-None-Match / If-Match and then writes, without a lock between the two,
    so its usual threaded server can let two racing conditional writes both through; S3 itself
    does not. Served one request at a time, moto's conditional writes are atomic as S3's are.
    """
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    bucket = f"results-{uuid.uuid4().hex[:8]}"  # moto's buckets outlive a server: one per test
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield RunDir(f"s3://{bucket}/studies/probe?endpoint_override={endpoint}&region=us-east-1")
    server.shutdown()
    thread.join()


@pytest.fixture
def local_run(tmp_path):
    return RunDir(str(tmp_path / "runs" / "probe"))


@pytest.fixture(params=["local", "s3"])
def run(request):
    return request.getfixturevalue(f"{request.param}_run")


def make_stale(run: RunDir, lock: DriverLock) -> None:
    """Stop `lock`'s heartbeat without releasing it, as SIGKILL would, and wait until it is stale."""
    lock._stop.set()
    lock._beating.join()
    if run.local:  # a filesystem's mtime can be set back: no need to wait
        generation = os.path.join(run.path, "lock", str(lock._version))
        os.utime(generation, (time.time() - 60, time.time() - 60))
    else:  # S3 stamps LastModified itself (1 s resolution): wait for the hold to age
        wait_for(lambda: lock.holder().age > 1, timeout=10, every=0.2)


def test_a_held_run_is_refused_naming_its_holder_and_free_once_released(run):
    with DriverLock(run, heartbeat_s=60, stale_s=30).acquire():
        with pytest.raises(RunLocked) as refused:
            DriverLock(run, heartbeat_s=60, stale_s=30).acquire()
    assert re.fullmatch(
        rf"{re.escape(run.display())} is being run by pid {os.getpid()} on {re.escape(socket.gethostname())} "
        r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(heartbeat \d s ago\); run again with --wait to wait for it "
        r"\(a driver without a heartbeat for 30 s is taken over\)", str(refused.value))
    with DriverLock(run, heartbeat_s=60, stale_s=30).acquire():  # released on leaving the block: free at once
        pass


def test_a_damaged_lock_record_is_one_line_and_takes_nothing_over(run):
    # A record is written whole: a damaged one is a bad copy, and who held the run cannot be known.
    lock = DriverLock(run, heartbeat_s=60, stale_s=30)
    if run.local:
        os.makedirs(os.path.join(run.path, "lock"))
        Path(run.path, "lock", "1").write_bytes(b'{"token": "ab')
        where = run.display("lock", "1")
    else:
        lock.store._call("put_object", Body=b'{"token": "ab')
        where = run.display("lock")
    with pytest.raises(RunError) as e:
        lock.acquire()
    assert str(e.value) == (f"{where}: unreadable lock record (JSONDecodeError: Unterminated string starting at: line 1 "
                            "column 11 (char 10)); if no `ablate run` is running this run, delete it and run again")


def test_a_lock_that_is_a_file_is_one_line_naming_it(local_run):
    # A run on S3 copied to a local path (aws s3 sync) brings its lock, one object, as a file where a
    # local run keeps a folder of generations: `ablate run` said "cannot write there (File exists)".
    os.makedirs(local_run.path)
    Path(local_run.path, "lock").write_bytes(b'{"token": "ab", "host": "node-1", "pid": 7}')
    with pytest.raises(RunError) as e:
        DriverLock(local_run, heartbeat_s=60, stale_s=30).acquire()
    assert str(e.value) == (f"{local_run.display('lock')}: expected the folder of a run's lock on a local path, found "
                            "a file (a run's lock on S3, copied here?); if no `ablate run` is running this run, "
                            "delete it and run again")


@pytest.mark.parametrize("leaving", [KeyboardInterrupt, ValueError])
def test_ctrl_c_and_errors_release_the_run(local_run, leaving):
    with pytest.raises(leaving):
        with DriverLock(local_run, heartbeat_s=60, stale_s=30).acquire():
            raise leaving()
    with DriverLock(local_run, heartbeat_s=60, stale_s=30).acquire():
        pass


def test_two_takeovers_of_the_same_stale_hold_one_wins(run):
    """Both contenders judged the hold stale before either acted: the second's write must fail."""
    dead = DriverLock(run, heartbeat_s=60, stale_s=1).acquire()
    make_stale(run, dead)
    first, second = (DriverLock(run, heartbeat_s=60, stale_s=1) for _ in range(2))
    (holder, version), (_, same_version) = first.store.read(), second.store.read()
    assert holder.pid == os.getpid() and holder.age > 1 and version == same_version
    assert first.store.create(first._record(), replacing=version) is not None
    assert second.store.create(second._record(), replacing=version) is None
    with pytest.raises(RunLocked):  # and the second, looking again, finds the first's fresh hold
        second.acquire()


@pytest.mark.parametrize("contenders", [4])
def test_contenders_racing_for_a_stale_hold_one_wins(run, contenders):
    dead = DriverLock(run, heartbeat_s=60, stale_s=1).acquire()
    make_stale(run, dead)
    start = threading.Barrier(contenders)
    outcomes = []

    def contend():
        lock = DriverLock(run, heartbeat_s=60, stale_s=1)
        start.wait()
        try:
            outcomes.append(lock.acquire())
        except RunLocked:
            outcomes.append("refused")

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [o for o in outcomes if o != "refused"]
    assert len(outcomes) == contenders and len(winners) == 1
    winners[0].release()


def test_a_contender_delayed_while_others_took_the_run_does_not_take_it(run):
    """It read the run as free, then stalled while two drivers came and went and a third took the run."""
    late = DriverLock(run, heartbeat_s=60, stale_s=30)
    _, nobody = late.store.read()
    for _ in range(2):
        DriverLock(run, heartbeat_s=60, stale_s=30).acquire().release()
    with DriverLock(run, heartbeat_s=60, stale_s=30).acquire() as holder:
        assert late.store.create(late._record(), replacing=nobody) is None
        assert holder.store.beat(holder._version, holder._record(1)) is not None  # still its own
        with pytest.raises(RunLocked):
            late.acquire()


def test_a_link_below_the_highest_generation_is_no_hold(local_run):
    """Where older generations were removed (by hand, by an older ablate), a delayed contender's link
    of one of their names succeeds: it has still lost, and leaves no generation behind."""
    late = DriverLock(local_run, heartbeat_s=60, stale_s=30)
    _, nobody = late.store.read()
    for _ in range(2):
        DriverLock(local_run, heartbeat_s=60, stale_s=30).acquire().release()
    folder = Path(local_run.path) / "lock"
    with DriverLock(local_run, heartbeat_s=60, stale_s=30).acquire() as holder:
        for old in range(1, holder._version):
            (folder / str(old)).unlink()
        assert late.store.create(late._record(), replacing=nobody) is None
        assert [p.name for p in folder.iterdir() if p.name.isdigit()] == [str(holder._version)]
        assert holder.store.beat(holder._version, holder._record(1)) is not None


@pytest.mark.parametrize("found", ["a higher generation", "another driver in its generation"])
def test_a_driver_whose_generation_is_not_the_hold_stops(local_run, found):
    """Where generations were removed by hand, generation n+1 need not exist for n to be no longer the
    hold: a driver holds the run only while its generation is the highest and its own."""
    lost = threading.Event()
    holder = DriverLock(local_run, heartbeat_s=0.05, stale_s=30, on_lost=lost.set).acquire()
    other = DriverLock(local_run, heartbeat_s=60, stale_s=30)
    folder, n = Path(local_run.path) / "lock", holder._version
    if found == "a higher generation":
        (folder / str(n + 2)).write_bytes(other._record())
    else:
        (folder / str(n)).unlink()
        (folder / str(n)).write_bytes(other._record())
    wait_for(lost.is_set, timeout=10)
    with pytest.raises(RunError, match=r": taken over by pid \d+ .*; stopped its trials$"):
        with holder:
            pass


def test_a_driver_whose_hold_was_taken_over_stops(local_run):
    lost = threading.Event()
    paused = DriverLock(local_run, heartbeat_s=0.05, stale_s=1, on_lost=lost.set).acquire()
    # The driver's beats stop reaching the storage for longer than the stale time (a suspended
    # laptop): seen from outside, its hold is stale, and another driver takes the run.
    generation = os.path.join(local_run.path, "lock", str(paused._version))
    os.utime(generation, (time.time() - 60, time.time() - 60))
    successor = DriverLock(local_run, heartbeat_s=60, stale_s=1).acquire()
    wait_for(lost.is_set, timeout=10)
    with pytest.raises(RunError, match=rf"^{re.escape(local_run.display())}: taken over by pid {os.getpid()} .* "
                                       r"after this driver's heartbeat had stopped for 1 s; stopped its trials$"):
        with paused:
            pass
    successor.release()


def test_a_driver_that_cannot_reach_its_storage_stops_before_it_can_be_taken_over(local_run, monkeypatch):
    """Its beats fail (a partition, expired credentials), so it could not see a takeover: it stops itself."""
    lost = threading.Event()
    cut_off = DriverLock(local_run, heartbeat_s=0.05, stale_s=1, on_lost=lost.set).acquire()

    def unreachable(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cut_off.store, "beat", unreachable)
    wait_for(lost.is_set, timeout=10)
    with pytest.raises(RunError, match=rf"^{re.escape(local_run.display())}: this driver could not reach its "
                                       r"storage for \d+ s and stopped its trials \(a driver without a heartbeat "
                                       r"for 1 s is taken over\)$"):
        with cut_off:
            pass


@pytest.mark.parametrize("lost_response", ["taking the run", "a beat"])
def test_a_write_whose_response_was_lost_keeps_the_run(s3_run, monkeypatch, lost_response):
    """botocore retries a PUT whose response was lost; where S3 had carried out the first one, the
    retry fails its condition (412) because of this driver's own write: not another driver's."""
    puts, lose = [], threading.Event()
    send = botocore.endpoint.Endpoint._send

    def send_and_lose_the_response(endpoint, request):
        response = send(endpoint, request)
        if request.method == "PUT":
            puts.append(response.status_code)
            if lose.is_set():
                lose.clear()
                raise ReadTimeoutError(endpoint_url=request.url)
        return response

    monkeypatch.setattr(botocore.endpoint.Endpoint, "_send", send_and_lose_the_response)
    lost = threading.Event()
    lock = DriverLock(s3_run, heartbeat_s=0.05, stale_s=30, on_lost=lost.set)
    if lost_response == "taking the run":
        lose.set()
    with lock.acquire():
        if lost_response == "a beat":
            lose.set()
        wait_for(lambda: 412 in puts and 200 in puts[puts.index(412):])  # beats on after the retry
        assert not lost.is_set()
    assert puts.count(412) == 1
    DriverLock(s3_run, heartbeat_s=60, stale_s=30).acquire().release()  # released: free at once


def test_two_ablate_runs_of_one_grid_at_once_train_every_trial_once(tmp_path):
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 3, "sleep": 0.5},
                      resources={"cpus": 1})
    storage = tmp_path / "runs"
    exe = os.path.join(os.path.dirname(sys.executable), "ablate")
    drivers = [subprocess.Popen([exe, "run", str(path), "--storage", str(storage), "--quiet"], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        outputs = [driver.communicate(timeout=180) for driver in drivers]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
    by_code = {driver.returncode: (driver, out, err) for driver, (out, err) in zip(drivers, outputs)}
    assert sorted(by_code) == [0, 1], outputs
    winner, _, _ = by_code[0]
    _, out, err = by_code[1]
    assert err.strip().startswith(f"error: {storage / 'probe'} is being run by pid {winner.pid} on "
                                  f"{socket.gethostname()} since "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert starts(tmp_path) == Counter({f"lr{lr}-seed0-never": 1 for lr in (0.1, 0.2, 0.3, 0.4)})
    rows = trials(storage / "probe")
    assert len(rows) == 4 and rows["trial_id"].is_unique and (rows["attempts"] == 1).all()


def plant_hold(run: RunDir, **record) -> None:
    """A fresh hold written as another driver would have written it, with `record`'s fields."""
    me = this_process()
    lock = DriverLock(run, heartbeat_s=60, stale_s=30)
    body = {**json.loads(lock._record()), "token": uuid.uuid4().hex, "machine": me["machine"], **record}
    if run.local:
        folder = Path(run.path) / "lock"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "1").write_text(json.dumps(body))
    else:
        lock.store.create(json.dumps(body).encode(), replacing=None)


def ended_pid() -> int:
    """The pid of a process of ours that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("how", ["its process ended", "its pid is another process now"])
def test_a_hold_of_a_driver_on_this_machine_that_has_ended_is_taken_at_once(run, how):
    me = this_process()
    if how == "its process ended":
        plant_hold(run, pid=ended_pid(), start=me["start"])
    else:  # the kernel gave the dead driver's pid to a process that started later: this one
        plant_hold(run, pid=me["pid"], start=me["start"] - 1)
    notes = []
    with DriverLock(run, heartbeat_s=60, stale_s=30).acquire(notify=notes.append) as lock:
        assert lock.previous is not None  # the runner waits for its trial workers on this machine
    assert len(notes) == 1 and notes[0].endswith(", has ended; taking the run over")


@pytest.mark.parametrize("other", ["another machine", "another machine with this hostname", "an older ablate"])
def test_a_hold_on_another_machine_keeps_the_heartbeat_rule(run, other):
    """Its pid means nothing here, whether or not this machine has that pid (ours) or calls itself
    the same (containers and cloud images share hostnames): it is taken only once stale."""
    me = this_process()
    record = {"pid": me["pid"], "start": me["start"] - 1}
    if other == "an older ablate":  # its lock named no machine
        record.update(machine=None, start=None, place=None)
    else:
        record["machine"] = "0" * 32 + "/" + str(uuid.uuid4()) + "/pid:[4026531836]"
    if other != "another machine with this hostname":
        record["host"] = "host-b"
    plant_hold(run, **record)
    with pytest.raises(RunLocked, match=rf"is being run by pid {me['pid']} on "):
        DriverLock(run, heartbeat_s=60, stale_s=30).acquire()
    if run.local:  # and once its beat is older than the stale time, it is taken
        generation = Path(run.path) / "lock" / "1"
        os.utime(generation, (time.time() - 60, time.time() - 60))
        DriverLock(run, heartbeat_s=60, stale_s=30).acquire().release()


def test_a_run_directory_copied_while_it_ran_is_free_and_runs_at_once(tmp_path):
    """A copy of a run directory made while its driver runs (cp -a, rsync, shutil.copytree) holds a
    fresh-looking copy of the lock; the driver it names runs the original, never the copy."""
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 2})
    first = ablate("run", path, "--storage", tmp_path / "runs", "--quiet")
    assert first.returncode == 0, first.stderr
    original = RunDir(str(tmp_path / "runs" / "probe"))
    with DriverLock(original, stale_s=30).acquire():  # the original's driver, still running
        shutil.copytree(tmp_path / "runs", tmp_path / "copy")
        grown = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3]}, fixed={"epochs": 2})  # one more trial
        result = ablate("run", grown, "--storage", tmp_path / "copy", "--quiet")
        assert result.returncode == 0, result.stderr
        assert "holds elsewhere (this run directory was copied while it ran); taking the run" in result.stderr
        assert "probe: 3 completed (1 run now, 2 already done)" in result.stdout
        with pytest.raises(RunLocked):  # the original stays its driver's
            DriverLock(original, stale_s=30).acquire()
    assert starts(tmp_path) == Counter({f"lr{lr}-seed0-never": 1 for lr in (0.1, 0.2, 0.3)})
    rows = trials(tmp_path / "copy" / "probe")
    assert len(rows) == 3 and rows["trial_id"].is_unique and (rows["status"] == "completed").all()


def test_a_driver_taking_over_waits_for_the_dead_drivers_trial_workers_on_this_machine(local_run):
    """Ray ends a dead driver's workers within seconds, not at once: one still training a trial must
    not meet the new driver's attempt of it."""
    from types import SimpleNamespace

    from orchestrator.run import processes
    from orchestrator.run.runner import _let_workers_end

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        identity = {"machine": processes.machine(), "pid": worker.pid, "start": processes._stat(worker.pid)[1]}
        local_run.write_progress("t1", {"attempt": 1, "epoch": 1, "worker": identity})
        notes = []
        threading.Timer(0.5, worker.kill).start()
        _let_workers_end(local_run, [SimpleNamespace(trial_id="t1")], 30, notes.append)
        assert worker.poll() is not None  # returned once the worker had ended, not before
        assert notes == [f"waiting for 1 trial worker(s) of the previous driver to end (pid {worker.pid})"]
    finally:
        worker.kill()
        worker.wait()


def test_asking_whether_a_run_is_driven_writes_nothing_where_no_driver_ever_held_it(tmp_path):
    # `ablate status` of a copy of a run's results (no lock folder): not known, and left as it was.
    run_dir = tmp_path / "runs" / "copy"
    run_dir.mkdir(parents=True)
    assert DriverLock(RunDir(str(run_dir))).driven() is None
    assert list(run_dir.iterdir()) == []
