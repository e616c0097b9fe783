"""cluster.yaml and docs/cluster-local.yaml pass Ray's own cluster-launcher validation, offline."""
from __future__ import annotations

import copy

import jsonschema
import pytest
import ray
import yaml

# Private Ray API (RAY_NOTES.md): pinned by the ray 2.60 requirement; skip rather than break if it moves.
util = pytest.importorskip("ray.autoscaler._private.util")

from tests.conftest import ROOT  # noqa: E402

CONFIGS = [ROOT / "cluster.yaml", ROOT / "docs" / "cluster-local.yaml"]


def validate(config: dict) -> dict:
    config = util.prepare_config(copy.deepcopy(config))
    util.validate_config(config)
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_configs_pass_rays_validation(path):
    validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_validation_catches_a_broken_config(path):
    broken = yaml.safe_load(path.read_text())
    broken["setup_comands"] = broken.pop("setup_commands")  # a typo
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_aws_cluster_has_what_a_gpu_study_needs():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert config["provider"]["type"] == "aws"
    # The image matches the Ray that ablate runs with.
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    head = config["available_node_types"][config["head_node_type"]]
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # trials run on workers only
    for node in [head, *workers]:
        assert node["node_config"]["ImageId"]  # never Ray's old default AMI
    for worker in workers:
        assert worker["min_workers"] == 0 and worker["max_workers"] >= 1  # autoscaled from zero
        assert worker["node_config"]["InstanceType"].startswith(("g", "p"))  # GPU instances
        assert "IamInstanceProfile" in worker["node_config"]  # workers write to S3
    assert any("pip install" in c and "~/ablate" in c for c in config["setup_commands"])


def test_local_cluster_lists_machines_instead_of_node_types():
    config = yaml.safe_load((ROOT / "docs" / "cluster-local.yaml").read_text())
    assert config["provider"]["type"] == "local" and "available_node_types" not in config
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_setup_run_again_adds_nothing_more_to_bashrc(path, tmp_path):
    # `ray up` runs setup_commands again on every call: cluster.yaml added `cd ~/ablate` each time.
    import subprocess

    commands = [c for c in yaml.safe_load(path.read_text())["setup_commands"] if ".bashrc" in c]
    assert commands
    (tmp_path / ".bashrc").write_text("# the image's own\n")
    for _ in range(3):  # three `ray up`s
        for c in commands:
            subprocess.run(["bash", "-c", c], env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, check=True)
    lines = (tmp_path / ".bashrc").read_text().splitlines()
    assert len(lines) == 2 and "cd ~/ablate" in lines[1]
