"""`ray up cluster.yaml` and `ray down` against moto's fake EC2 and IAM, with every remote command
(ssh, rsync, docker) intercepted as Ray's own test_cli.py::test_ray_up does; and what Ray's
autoscaler would launch for the paper grid's waiting trials. What a user relies on when they run
`ray up` is asserted here, so that an edit of cluster.yaml or docs/cluster-local.yaml that
breaks it fails a test. What only a real cloud shows (the AMI's drivers, the image pull, quotas,
IAM permissions: moto does not enforce them) is out of reach."""
from __future__ import annotations

import copy
import functools
import math

import boto3
import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("moto")
testfixtures_popen = pytest.importorskip("testfixtures.popen")

import ray  # noqa: E402
import ray.autoscaler._private.aws.config as aws_config  # noqa: E402  private API, pinned by ray 2.60
import ray.scripts.scripts as ray_cli  # noqa: E402
from moto import mock_aws  # noqa: E402
from ray.autoscaler._private import util  # noqa: E402
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary  # noqa: E402
from ray.autoscaler._private.resource_demand_scheduler import (  # noqa: E402
    _default_utilization_scorer, get_nodes_for)

from orchestrator.plan.grid import load_grid  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.fake_cluster import aws_resources  # noqa: E402

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


@pytest.fixture
def aws(tmp_path, monkeypatch):
    """moto's EC2 and IAM in this process; no request can reach AWS."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
                       "HOME": str(tmp_path)}.items():  # ray up writes its key pair to ~/.ssh
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(aws_config.time, "sleep", lambda seconds: None)  # Ray waits 15 s for IAM to propagate
    with mock_aws():
        yield


def _ready_for_moto(path, tmp_path):
    """cluster.yaml as moto can launch it: EC2 resolves `resolve:ssm:` AMI ids at launch, moto does
    not, so the AMI becomes one moto knows; and the project folder is named absolutely."""
    config = yaml.safe_load(path.read_text())
    image = boto3.client("ec2", region_name=config["provider"]["region"]).describe_images(
        Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}])["Images"][0]["ImageId"]
    for node_type in config["available_node_types"].values():
        node_type["node_config"]["ImageId"] = image
    config["file_mounts"] = {remote: str(ROOT) for remote in config["file_mounts"]}
    copied = tmp_path / path.name
    copied.write_text(yaml.safe_dump(config))
    return copied, image


def _remote_commands(command, stdin):
    """What the head answers over ssh: a running container with no environment of its own."""
    if ".Config.Env" in command:
        return testfixtures_popen.PopenBehaviour(stdout=b"{}")
    if "command -v docker" in command:
        return testfixtures_popen.PopenBehaviour(stdout=b"/usr/bin/docker")
    if "printenv HOME" in command:  # how Ray expands ~ in the container: the ray image's home
        return testfixtures_popen.PopenBehaviour(stdout=b"/home/ray")
    return testfixtures_popen.PopenBehaviour(stdout=b"ok")


def _ray(command, *args):
    result = CliRunner().invoke(command, [*map(str, args), "-y", "--log-style=record"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _instances(region):
    reservations = boto3.client("ec2", region_name=region).describe_instances()["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def test_cluster_yaml_needs_no_hand_picked_ami_or_account():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for node_type in config["available_node_types"].values():
        # Resolved by EC2 in whatever region is set: the current Ubuntu 22.04 GPU DLAMI, not Ray's
        # default (an Ubuntu 18.04 DLAMI, CUDA 11.2).
        assert node_type["node_config"]["ImageId"] == f"resolve:ssm:{DLAMI_PARAMETER}"
    worker = config["available_node_types"]["gpu_worker"]["node_config"]
    assert worker["IamInstanceProfile"] == {"Name": aws_config.DEFAULT_RAY_INSTANCE_PROFILE}  # no account id
    marked = [line.split("#")[0].strip() for line in (ROOT / "cluster.yaml").read_text().splitlines()
              if "# CHANGE" in line]
    assert marked == ["region: us-west-2"]  # the one edit left
    assert "availability_zone" not in config["provider"]  # zones would name the region a second time


def test_ray_up_starts_the_head_that_ablate_needs_and_ray_down_ends_it(tmp_path, aws):
    path, image = _ready_for_moto(ROOT / "cluster.yaml", tmp_path)
    config = yaml.safe_load(path.read_text())
    region = config["provider"]["region"]
    popen = testfixtures_popen.MockPopen()
    popen.set_default(behaviour=_remote_commands)
    from testfixtures import Replacer

    with Replacer() as replace:
        replace("subprocess.Popen", popen)
        _ray(ray_cli.up, path, "--no-config-cache")  # the cache keys on AWS ids, new in every moto
        commands = [" ".join(c.args[0]) if isinstance(c.args[0], list) else c.args[0]
                    for c in popen.all_calls if c.args and isinstance(c.args[0], (list, str))]

        (head,) = [i for i in _instances(region) if i["State"]["Name"] == "running"]
        tags = {t["Key"]: t["Value"] for t in head["Tags"]}
        assert tags["ray-user-node-type"] == "head"
        assert head["InstanceType"] == "m6i.xlarge" and head["ImageId"] == image
        # The head got Ray's role, and it is the one the GPU workers are launched with: S3 for both.
        assert head["IamInstanceProfile"]["Arn"].endswith(f"/{aws_config.DEFAULT_RAY_INSTANCE_PROFILE}")
        profile = boto3.client("iam").get_instance_profile(
            InstanceProfileName=config["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]["Name"])
        role = profile["InstanceProfile"]["Roles"][0]["RoleName"]
        policies = boto3.client("iam").list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        assert "arn:aws:iam::aws:policy/AmazonS3FullAccess" in {p["PolicyArn"] for p in policies}

        # On the head: the Ray image of ablate's Ray, this project installed, Ray started with the
        # autoscaling config (autoscaler v2, Ray's default for `ray up`).
        assert any(f"docker pull rayproject/ray:{ray.__version__}-py311-gpu" in c for c in commands)
        assert any("--shm-size=16g" in c for c in commands if "docker run" in c)
        assert any("pip install --quiet -e /home/ray/ablate" in c for c in commands)
        assert any("rsync" in c and str(ROOT) in c for c in commands)  # the project, copied
        (start,) = [c for c in commands if "ray start --head" in c]
        assert "--autoscaling-config=/home/ray/ray_bootstrap_config.yaml" in start
        assert "RAY_enable_autoscaler_v2=1" in start

        _ray(ray_cli.down, path)
    assert {i["State"]["Name"] for i in _instances(region)} == {"terminated"}


def _plan(config: dict, trials: int, resources) -> dict[str, int]:
    """The nodes Ray's autoscaler would add for `trials` waiting trials on an empty cluster."""
    node_types = config["available_node_types"]
    demands = [{"CPU": resources.cpus, "GPU": resources.gpus}] * trials
    scorer = functools.partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    plan, _ = get_nodes_for(node_types, {}, config["head_node_type"], config["max_workers"], demands, scorer)
    return plan


def test_the_autoscaler_adds_gpu_workers_for_the_paper_grid_up_to_max_workers(aws):
    config = util.prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    for name, resources in aws_resources(config).items():  # what Ray reads from EC2 for each instance type
        config["available_node_types"][name]["resources"] = resources
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    paper = load_grid(ROOT / "grids" / "paper.yaml")
    assert (paper.resources.cpus, paper.resources.gpus) == (2, 0.25)
    per_node = 4  # g5.2xlarge: 8 CPUs and 1 GPU hold four trials of 2 CPUs and 0.25 GPU
    for waiting in (1, 10, 31, len(paper.trials)):
        assert _plan(config, waiting, paper.resources) == {
            "gpu_worker": min(math.ceil(waiting / per_node), config["max_workers"])}


def test_local_cluster_starts_every_listed_machine_with_the_project():
    """docs/cluster-local.yaml: the local provider has no autoscaling to plan, it keeps every
    listed machine; what Ray prepares from the file is checked (`ray up` there needs SSH)."""
    raw = yaml.safe_load((ROOT / "docs" / "cluster-local.yaml").read_text())
    config = util.prepare_config(copy.deepcopy(raw))
    util.validate_config(config)
    # One node type for the head and the workers, kept at exactly the listed workers.
    (node_type,) = config["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(raw["provider"]["worker_ips"]) > 0
    assert any("pip install" in c and "-e ~/ablate" in c for c in config["setup_commands"])
    assert any("ray start --head" in c and "--autoscaling-config=~/ray_bootstrap_config.yaml" in c
               for c in config["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:" in c for c in config["worker_start_ray_commands"])
