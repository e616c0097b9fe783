"""Runs on S3: `ablate run`, `status` and `summarize` against a local S3-compatible server (moto),
through the same code path users hit with s3://bucket/prefix."""
from __future__ import annotations

import io
import itertools
import json
import os
import socket
import threading
import time
import urllib.request

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from orchestrator.run.session import StoredSession
from orchestrator.store import lines, records
from orchestrator.store.checkpoint import serialize
from orchestrator.store.lines import Lines, read_lines
from orchestrator.store.rundir import RunDir
from tests.conftest import ablate
from tests.runs import probe_grid, starts

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto_s3(port: int = 0):
    """moto's S3 server on 127.0.0.1 (`port` 0: a free one, with no buckets), a client of it and
    the storage query that points ablate at it. Its buckets live in this process: a server started
    again on the same port serves what the last one held."""
    fresh = port == 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    if fresh:  # nothing of an earlier test's buckets, which live on in this process
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    return server, boto3.client("s3", endpoint_url=endpoint), f"endpoint_override={endpoint}&region=us-east-1"


@pytest.fixture
def s3(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server, client, query = moto_s3()
    client.create_bucket(Bucket="results")
    yield client, query
    server.stop()


def test_run_status_and_summarize_on_s3(tmp_path, s3):
    client, query = s3
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2], "fail": ["never", "once"]}, fixed={"epochs": 2},
                      max_failures=1)
    storage = f"s3://results/studies?{query}"
    result = ablate("run", path, "--storage", storage, "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "probe: 4 completed (4 run now, 0 already done)" in result.stdout
    assert "results: s3://results/studies/probe/trials.parquet" in result.stdout

    keys = {o["Key"] for o in client.list_objects_v2(Bucket="results", Prefix="studies/probe/")["Contents"]}
    assert {"studies/probe/trials.parquet", "studies/probe/epochs.parquet", "studies/probe/grid.yaml"} <= keys
    assert sum(k.endswith("/checkpoint.pt") for k in keys) == 4  # the retried trials resumed from these
    assert not [k for k in keys if ".segments/" in k]  # each trial's log and epochs joined into one object
    trials = pd.read_parquet(io.BytesIO(client.get_object(Bucket="results", Key="studies/probe/trials.parquet")["Body"].read()))
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    assert sorted(trials["attempts"]) == [1, 1, 2, 2]
    # An object store cannot append: a retried trial's log is one object with every line of both
    # attempts, its progress the latest line alone.
    retried = trials[(trials["attempts"] == 2) & (trials["lr"] == 0.1)]["trial_id"].iloc[0]
    text = lambda name: client.get_object(Bucket="results", Key=f"studies/probe/trials/{retried}/{name}")["Body"].read()
    said = [line.split(" ", 2)[2].split(":")[0] for line in text("trial.log").decode().splitlines() if line[:1].isdigit()]
    assert said[:2] == ["attempt 1 on " + socket.gethostname(), "epoch=1 val_error=0.6"]
    assert said[-3:] == ["resumed from the checkpoint after epoch 1", "epoch=2 val_error=0.4333", "finished"]
    assert said.index("failed") < said.index("attempt 2 on " + socket.gethostname())
    progress = text("progress.jsonl").decode()
    assert progress.count("\n") == 1 and json.loads(progress)["attempt"] == 2 and json.loads(progress)["epoch"] == 2

    run = f"s3://results/studies/probe?{query}"
    status = ablate("status", run, "--trust-workload")  # tests.probe is not registered: its grid's trials count
    assert status.returncode == 0, status.stderr
    assert "4 finished of 4: 4 completed" in status.stdout
    summary = ablate("summarize", run, "--format", "json")
    assert summary.returncode == 0, summary.stderr
    cells = json.loads(summary.stdout)
    assert {c["lr"] for c in cells} == {0.1, 0.2} and all(c["status"] == "completed" for c in cells)

    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 0 and "(0 run now, 4 already done)" in again.stdout


def _epochs(trials: int, val_error: float) -> pa.Table:
    return pa.table({"trial_id": [f"t{i}" for i in range(trials)], "epoch": [1] * trials,
                     "val_error": [val_error] * trials})


def test_epochs_read_while_the_driver_replaces_them_come_from_one_version(s3, monkeypatch):
    """`ablate plot` during a run reads epochs.parquet while the driver rewrites it: the new
    version lands between two of the reader's requests."""
    client, query = s3
    run = RunDir(f"s3://results/studies/probe?{query}")
    run.write_table(run.child("epochs.parquet"), _epochs(1000, 0.5))
    newer = pa.BufferOutputStream()
    pq.write_table(_epochs(3000, 0.25), newer)
    gets, get_object = [], S3Response.get_object

    def replaced_after_the_first_get(self):
        gets.append(self.path)
        if len(gets) == 2:
            client.put_object(Bucket="results", Key="studies/probe/epochs.parquet", Body=newer.getvalue().to_pybytes())
        return get_object(self)

    monkeypatch.setattr(S3Response, "get_object", replaced_after_the_first_get)
    assert records.read_epochs(run, ["t1", "t3"]).to_pylist() == [
        {"trial_id": "t1", "epoch": 1, "val_error": 0.5}, {"trial_id": "t3", "epoch": 1, "val_error": 0.5}]


def test_a_report_on_s3_writes_each_file_in_one_request(s3, monkeypatch):
    """A trial writes its epochs, checkpoint, progress and log at each report: as multipart uploads
    each took three requests (on moto, 110 ms a report instead of 27 ms; benchmarks/README.md)."""
    _, query = s3
    parts, upload_part = [], S3Response.upload_part

    def counted(self, *args, **kwargs):
        parts.append(self.path)
        return upload_part(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "upload_part", counted)
    run = RunDir(f"s3://results/studies/probe?{query}")
    session = StoredSession(run, "t")
    session.start()
    for step in (100, 200, 300):
        session.report({"step": step, "loss": 1 / step}, checkpoint={"epoch": step})
    session.close()
    assert parts == []
    assert [e["step"] for e in run.checkpoint("t")["epochs"]] == [100, 200, 300]


def test_reports_that_come_while_a_write_is_under_way_go_to_s3_together(s3, monkeypatch):
    """A script printing faster than the store takes a file: each report waited for the last one's
    files, and its record fell further and further behind what it printed."""
    _, query = s3
    puts, put_object = [], S3Response.put_object

    def slow(self, *args, **kwargs):  # a store far away
        puts.append(self.path)
        time.sleep(0.05)
        return put_object(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "put_object", slow)
    run = RunDir(f"s3://results/studies/probe?{query}")
    session = StoredSession(run, "t")
    session.start()
    for step in range(1, 101):
        session.report({"step": step, "loss": 1 / step}, checkpoint={"epoch": step})
    session.close()
    assert [e["step"] for e in run.checkpoint("t")["epochs"]] == list(range(1, 101))
    assert sum(path.endswith("/epochs.jsonl") for path in puts) < 20  # not one a report


def test_a_scripts_own_files_go_to_s3_after_the_checkpoint_of_the_epochs_it_printed(s3, monkeypatch):
    """A script saves its checkpoint in its trial directory before it prints the epoch. Its files
    were sent to the store as each epoch was read, the epoch's own record later, with the reports
    gathered while the last write was under way: a worker killed meanwhile left the script's
    checkpoint on S3 several epochs past the trial's, and the retry resumed past epochs it never
    reported (a fast script, worker killed: 3 of 3 runs lost 2 to 7 of its reports)."""
    client, query = s3
    run = RunDir(f"s3://results/r?{query}")
    session = StoredSession(run, "t")
    session.start()
    write_bytes, writing, killed = run.write_bytes, threading.Event(), threading.Event()

    def slow(path, data):  # a checkpoint still on its way when the worker dies
        writing.set()
        killed.wait(10)
        write_bytes(path, data)

    with session.files() as trial_dir:
        for step in (1, 2, 3):
            with open(os.path.join(trial_dir, "checkpoint.json"), "w") as f:
                json.dump({"step": step + 1}, f)  # where the script takes up again
            session.record({"step": step}, checkpoint={"epoch": step})
            if step == 1:
                session.flush()
                monkeypatch.setattr(run, "write_bytes", slow)
        assert writing.wait(10)
        # What a retry finds, had the worker died now.
        script_at = json.loads(client.get_object(Bucket="results", Key="r/trials/t/files/checkpoint.json")["Body"].read())["step"]
        recorded = [e["step"] for e in RunDir(f"s3://results/r?{query}").checkpoint("t")["epochs"]]
        killed.set()
    session.close()
    assert recorded == list(range(1, script_at))  # each epoch before the one it takes up again


def test_a_results_file_replaced_while_it_is_read_is_read_whole(s3, monkeypatch):
    """pyarrow's S3 reads ask for an object's size, then for its bytes: a file the driver replaces
    in between came back as the first bytes of the new version ("unreadable Parquet")."""
    client, query = s3
    run = RunDir(f"s3://results/studies/probe?{query}")
    run.write_table(run.child("trials.parquet"), _epochs(1000, 0.5))
    newer = pa.BufferOutputStream()
    pq.write_table(_epochs(3000, 0.25), newer)
    head_object = S3Response.head_object

    def replaced_after_the_head(self, *args, **kwargs):
        response = head_object(self, *args, **kwargs)
        client.put_object(Bucket="results", Key="studies/probe/trials.parquet", Body=newer.getvalue().to_pybytes())
        return response

    monkeypatch.setattr(S3Response, "head_object", replaced_after_the_head)
    table = run.read_table(run.child("trials.parquet"))
    assert table.num_rows in (1000, 3000) and len(set(table["val_error"].to_pylist())) == 1


def test_the_lock_of_a_run_under_a_percent_encoded_prefix_sits_with_its_files(s3):
    # s3://results/a%20b: pyarrow writes the run's files under `a b/`, and the lock went to `a%20b/`,
    # where deleting or copying the run's folder would not find it.
    from orchestrator.run.lock import DriverLock

    client, query = s3
    run = RunDir(f"s3://results/a%20b/probe?{query}")
    run.write_bytes(run.child("grid.yaml"), b"name: probe\n")
    lock = DriverLock(run).acquire()
    try:
        assert sorted(_keys(client, "")) == ["a b/probe/grid.yaml", "a b/probe/lock"]
    finally:
        lock.release()


def test_a_bucket_that_does_not_exist_is_one_line(tmp_path, s3):
    _, query = s3
    path = probe_grid(tmp_path)
    result = ablate("run", path, "--storage", f"s3://no-such-bucket/studies?{query}")
    assert result.returncode == 1
    assert result.stderr == "error: s3://no-such-bucket/studies/probe: no such bucket 'no-such-bucket'\n"
    assert "0 run now" not in result.stdout


def test_a_bucket_that_refuses_access_is_one_line(tmp_path, s3, monkeypatch):
    import moto.settings

    _, query = s3
    path = probe_grid(tmp_path)
    # moto checks credentials against its IAM from the first request on: "testing" is no key it knows.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    result = ablate("run", path, "--storage", f"s3://results/studies?{query}")
    assert result.returncode == 1
    assert result.stderr == ("error: s3://results/studies/probe: access denied (InvalidAccessKeyId: The AWS Access "
                             "Key Id you provided does not exist in our records.)\n")


@pytest.mark.parametrize("command", ["summarize", "status"])
def test_reading_a_store_that_does_not_answer_is_one_line_saying_to_run_again_once_it_can_be_reached(
        monkeypatch, command):
    # It said "run the same command again once it can be written", of a command that writes nothing.
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = ablate(command, f"s3://results/studies/probe?endpoint_override=http://127.0.0.1:{port}&region=us-east-1",
                    env={"AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 1
    assert result.stderr == (f'error: s3://results/studies/probe: cannot reach it (Could not connect to the endpoint '
                             f'URL: "http://127.0.0.1:{port}/results/studies/probe/trials.parquet"); what finished is '
                             "kept: run the same command again once it can be reached\n")


def test_an_error_response_to_the_drivers_read_of_a_record_stops_the_run_in_one_line_and_the_next_run_goes_on(
        tmp_path, s3, monkeypatch):
    # An error response Bucket.call has no case of (InternalError, after botocore's retries), met by
    # a Tune callback reading a finished trial's record, was a plain RunError raised inside Tune: its
    # traceback, or the trial's failure with a retry used up. It is the storage's fault, not the trial's.
    _, query = s3
    get_object, failures = S3Response.get_object, [1]

    def internal_error(self):
        if "/records/" in self.path and failures[0]:
            failures[0] -= 1
            return 500, {}, ("<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                             "<Message>We encountered an internal error. Please try again.</Message></Error>")
        return get_object(self)

    monkeypatch.setattr(S3Response, "get_object", internal_error)
    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 2}, max_failures=1)
    storage = f"s3://results/studies?{query}"
    result = ablate("run", path, "--storage", storage, "--quiet", env={"AWS_MAX_ATTEMPTS": "1"})
    assert not failures[0] and result.returncode == 1
    assert result.stderr == ("error: s3://results/studies/probe: cannot reach it (InternalError in GetObject: We "
                             "encountered an internal error. Please try again.); what finished is kept: run the same "
                             "command again once it can be reached\n")
    assert "retrying" not in result.stdout and "failed" not in result.stdout
    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 0 and "probe: 1 completed (0 run now, 1 already done)" in again.stdout, again.stderr
    assert starts(tmp_path) == {"lr0.1-seed0-never": 1}  # its result kept, not trained again


def test_an_object_whose_transfer_is_cut_short_is_one_line(monkeypatch):
    # botocore retries a request, not the reading of its body: a connection cut while an object came
    # (a flaky network, a proxy) was a traceback (ResponseStreamingError).
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def cut_short():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nETag: \"e\"\r\n"
                                   b"Last-Modified: Mon, 07 Dec 2026 19:00:00 GMT\r\n\r\nPAR1" + b"x" * 100)

    serving = threading.Thread(target=cut_short, daemon=True)
    serving.start()
    try:
        result = ablate("summarize", f"s3://results/studies/probe?endpoint_override=http://127.0.0.1:{port}&region=us-east-1")
    finally:
        server.shutdown(socket.SHUT_RDWR)  # close() alone leaves accept() waiting, and the port open
        server.close()
        serving.join(5)
    assert not serving.is_alive()
    assert result.returncode == 1
    assert result.stderr == ("error: s3://results/studies/probe: cannot reach it (An error occurred while reading from "
                             "response stream: ('Connection broken: IncompleteRead(104 bytes read, 99896 more expected)', "
                             "IncompleteRead(104 bytes read, 99896 more expected))); what finished is kept: run the "
                             "same command again once it can be reached\n")


def test_s3_storage_without_credentials_is_one_line_before_ray_starts(tmp_path, monkeypatch):
    path = probe_grid(tmp_path)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    nowhere = str(tmp_path / "none")  # no ~/.aws files, no instance profile
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
           "AWS_EC2_METADATA_DISABLED": "true"}
    # An address where no Ray runs: had ablate gone to Ray first, this would be a connection error.
    result = ablate("run", path, "--storage", "s3://results/studies?endpoint_override=http://127.0.0.1:9&region=us-east-1",
                    "--address", "127.0.0.1:9", env=env)
    assert result.returncode == 1
    assert result.stderr == ("error: s3://results/studies/probe: no AWS credentials found (set AWS_PROFILE or "
                             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a node whose instance profile "
                             "gives them)\n")


def test_a_file_a_script_replaces_while_its_files_are_sent_is_not_an_error(s3, monkeypatch):
    # A script saves its checkpoint as a .tmp file renamed over the last one, while its trial's
    # files are sent after each report: one listed and gone is skipped, the next send has what
    # replaced it.
    import os

    from orchestrator.run.session import StoredSession

    client, query = s3
    session = StoredSession(RunDir(f"s3://results/r?{query}"), "t")
    session.start()
    walk = os.walk
    with session.files() as files:
        with open(os.path.join(files, "step"), "w") as f:
            f.write("1")
        with monkeypatch.context() as patched:  # listed, gone before its size is read
            patched.setattr(os, "walk", lambda top: ((d, s, [*n, "step.tmp"]) for d, s, n in walk(top)))
            session.record({"epoch": 1}, checkpoint={})
            session.flush()  # sent by the session's writer, after the checkpoint
        listed = session._local_signatures
        with monkeypatch.context() as patched:  # listed and read, gone before it is sent
            patched.setattr(session, "_local_signatures", lambda: {**listed(), "step.tmp": (1, 1)})
            session.record({"epoch": 2}, checkpoint={})
            session.flush()
    session.close()
    assert client.get_object(Bucket="results", Key="r/trials/t/files/step")["Body"].read() == b"1"
    assert [e["epoch"] for e in session.epochs] == [1, 2]


def _keys(client, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="results", Prefix=prefix).get("Contents", []))


def test_a_long_trials_log_and_epochs_cost_s3_bytes_in_proportion_to_their_length(s3, monkeypatch):
    """An object store cannot append: a trial's log and epochs were put whole at each write, so the
    bytes a chatty script uploaded grew with the square of its output (a 20 MB log put again every
    few hundred ms). Twice the lines now cost about twice the bytes, and the log and epochs read
    whole and in order while the trial runs, after its worker is killed, and once it is done."""
    client, query = s3
    monkeypatch.setattr(lines, "SEGMENT_SIZE", 4096)  # what a far longer trial does, in fewer lines
    put, put_object = {}, S3Response.put_object

    def counted(self, *args, **kwargs):
        if "/trial.log" in self.path or "/epochs.jsonl" in self.path:
            trial = self.path.split("/")[2]
            put[trial] = put.get(trial, 0) + len(self.body or b"")
        return put_object(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "put_object", counted)

    def killed_after(trial: str, reports: int) -> RunDir:
        run = RunDir(f"s3://results/{trial}?{query}")
        session = StoredSession(run, "t")
        session.start()
        for step in range(1, reports + 1):
            session.log(f"step {step}: " + "x" * 60)  # a script's output between its reports
            session.report({"step": step, "loss": 1 / step}, checkpoint={"epoch": step})
            session.flush()  # each its own write, as for a script no faster than the store
        return run  # never closed: its worker was killed

    killed_after("short", 150)
    run = killed_after("long", 300)
    assert put["long"] < 2.5 * put["short"]  # 1.2 MB against 0.57; put whole, 7.8 MB against 1.9

    log = run.trial_file("t", "trial.log")
    said = [line.split(" ", 2)[2] for line in read_lines(run, log).decode().splitlines()]
    logged = [line for step in range(1, 301) for line in (f"step {step}: " + "x" * 60, f"step={step} loss={1 / step:.4g}")]
    assert said == ["attempt 1 on " + socket.gethostname(), *logged]
    retry = StoredSession(run, "t")
    retry.start()
    assert retry.restore() == {"epoch": 300} and [e["step"] for e in retry.epochs] == list(range(1, 301))
    retry.report({"step": 301, "loss": 0.0}, checkpoint={"epoch": 301})
    retry.close()
    assert _keys(client, "long/trials/t/") == [f"long/trials/t/{name}" for name in
                                               ("checkpoint.pt", "epochs.jsonl", "progress.jsonl", "trial.log")]
    whole = client.get_object(Bucket="results", Key="long/trials/t/trial.log")["Body"].read().decode().splitlines()
    assert [line.split(" ", 2)[2] for line in whole] == [*said, "attempt 2 on " + socket.gethostname(),
                                                         "resumed from the checkpoint after step 300", "step=301 loss=0"]
    assert [e["step"] for e in run.checkpoint("t")["epochs"]] == list(range(1, 302))


def test_ablate_log_prints_a_running_trials_log_kept_in_parts_on_s3(s3, monkeypatch):
    client, query = s3
    monkeypatch.setattr(lines, "SEGMENT_SIZE", 64)  # a log of several parts
    run = RunDir(f"s3://results/study?{query}")
    session = StoredSession(run, "t")
    session.start()
    for step in range(1, 6):
        session.log(f"step {step} of a script's output")
        session.flush()  # each its own write; running, not closed: its log is still in parts
    assert len(_keys(client, "study/trials/t/trial.log.segments/")) > 1
    shown = ablate("log", run.uri, "--trial", "t")
    assert shown.returncode == 0, shown.stderr
    assert [line.split(" ", 2)[2] for line in shown.stdout.splitlines()] == [
        f"attempt 1 on {socket.gethostname()}", *(f"step {step} of a script's output" for step in range(1, 6))]
    session.close()


def test_a_trial_an_older_ablate_wrote_on_s3_as_whole_objects_resumes_with_its_epochs_and_log(s3):
    """Older ablates put a trial's log and epochs whole, one object each, at every write."""
    client, query = s3
    older = {"epochs.jsonl": b'{"step": 1}\n{"step": 2}\n', "trial.log": b"2026-12-01 10:00:00 attempt 1 on node\n",
             "checkpoint.pt": serialize({"state": {"epoch": 2}, "reported": 2}),
             "progress.jsonl": b'{"attempt": 1, "epoch": 2}\n'}
    for name, body in older.items():
        client.put_object(Bucket="results", Key=f"r/trials/t/{name}", Body=body)
    run = RunDir(f"s3://results/r?{query}")
    assert run.checkpoint("t") == {"state": {"epoch": 2}, "epochs": [{"step": 1}, {"step": 2}]}
    session = StoredSession(run, "t")
    assert session.start() == 2
    assert session.restore() == {"epoch": 2}
    session.report({"step": 3}, checkpoint={"epoch": 3})
    session.flush()
    assert read_lines(run, run.trial_file("t", "trial.log")).startswith(older["trial.log"])  # while it runs
    session.close()
    log = client.get_object(Bucket="results", Key="r/trials/t/trial.log")["Body"].read()
    assert log.startswith(older["trial.log"]) and log.endswith(b" step=3\n")
    assert [e["step"] for e in run.checkpoint("t")["epochs"]] == [1, 2, 3]
    assert not any(".segments/" in key for key in _keys(client, "r/"))


class _Killed(BaseException):
    pass


@pytest.mark.parametrize("rewrite", ["replace", "close"])
def test_a_writer_killed_between_any_two_requests_leaves_a_file_that_reads_whole(s3, monkeypatch, rewrite):
    """A worker may die between any two requests of a rewrite: an attempt's first report replaces
    its epochs, its end joins the segments into one object. A reader then gets the file as it was
    or as it became, never old segments with new ones, and the next attempt's lines follow it."""
    _, query = s3
    monkeypatch.setattr(lines, "SEGMENT_SIZE", 8)
    run = RunDir(f"s3://results/r?{query}")
    old = b"".join(b"%d\n" % i for i in range(20))  # some ten segments
    after = {"replace": b"new\n", "close": old}[rewrite]
    for killed_at in itertools.count():
        path = run.trial_file(f"t{killed_at}", "epochs.jsonl")
        writer = Lines(run, path)
        for line in old.splitlines(keepends=True):
            writer.add(line)
        requests = itertools.count()

        def dies(request):
            def call(*args):
                if next(requests) == killed_at:
                    raise _Killed
                return request(*args)
            return call

        with monkeypatch.context() as dying:
            dying.setattr(run, "write_bytes", dies(run.write_bytes))
            dying.setattr(run, "remove", dies(run.remove))
            try:
                writer.replace(b"new\n") if rewrite == "replace" else writer.close()
                finished = True
            except _Killed:
                finished = False
        read = read_lines(run, path)
        assert read in (old, after), killed_at
        assert read == after or not finished
        next_attempt = Lines(run, path)
        next_attempt.add(b"more\n")
        assert read_lines(run, path) == read + b"more\n", killed_at
        next_attempt.close()
        assert read_lines(run, path) == read + b"more\n", killed_at
        if finished:
            break
    assert killed_at >= 3  # a put and some removals


@pytest.mark.parametrize("stored, rewrite", [("segments", "replace"), ("segments", "close"), ("object", "replace")])
def test_a_file_rewritten_while_it_is_read_is_read_whole(s3, monkeypatch, stored, rewrite):
    """A reader lists a file's segments, then reads them or, where there are none, the object: the
    writer may replace the file or join its segments into one object in between."""
    _, query = s3
    monkeypatch.setattr(lines, "SEGMENT_SIZE", 8)
    run, reader = RunDir(f"s3://results/r?{query}"), RunDir(f"s3://results/r?{query}")
    path = run.trial_file("t", "epochs.jsonl")
    writer = Lines(run, path)
    old = b"".join(b"%d\n" % i for i in range(20))
    for line in old.splitlines(keepends=True):
        writer.add(line)
    if stored == "object":
        writer.close()
    read_bytes, rewrites = reader.read_bytes, [rewrite]

    def rewritten_first(path):
        if rewrites:
            writer.replace(b"new\n") if rewrites.pop() == "replace" else writer.close()
        return read_bytes(path)

    monkeypatch.setattr(reader, "read_bytes", rewritten_first)
    assert read_lines(reader, path) == {"replace": b"new\n", "close": old}[rewrite]
    assert not rewrites  # it came between the listing and the read
