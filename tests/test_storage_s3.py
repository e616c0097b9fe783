"""Runs on S3: `ablate run`, `status` and `summarize` against a local S3-compatible server (moto),
through the same code path users hit with s3://bucket/prefix."""
from __future__ import annotations

import io
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
from orchestrator.store import records
from orchestrator.store.rundir import RunDir
from tests.conftest import ablate
from tests.runs import probe_grid

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
    trials = pd.read_parquet(io.BytesIO(client.get_object(Bucket="results", Key="studies/probe/trials.parquet")["Body"].read()))
    assert len(trials) == 4 and (trials["status"] == "completed").all()
    assert sorted(trials["attempts"]) == [1, 1, 2, 2]
    # An object store cannot append: a retried trial's log is put again with every line of both
    # attempts, its progress with the latest line alone.
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
