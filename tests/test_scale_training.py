"""Training at scale: DDP (gloo, two CPU processes) over torchrun and by the config's ``processes``, mixed
precision and gradient clipping."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from rtpose.cli import app
from rtpose.synthetic.scene import SceneConfig, write_dataset
from trainer.checkpoint import read_checkpoint
from tests.conftest import TINY_MODEL
from tests.test_run_cli import rtpose
from trainer.config import ConfigError, config_from_dict

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    scene = SceneConfig(width=128, height=96, min_people=1, max_people=2)
    write_dataset(root / "train", 8, seed=1, config=scene)
    write_dataset(root / "val", 2, seed=2, config=scene)
    return root


def _config(root, name, extra=""):
    path = root / f"{name}.yaml"
    path.write_text(f"train_annotations: {root / 'train/annotations.json'}\n"
                    f"val_annotations: {root / 'val/annotations.json'}\n"
                    f"output_dir: {root / name}\n" + TINY_MODEL
                    + "epochs: 2\nbatch_size: 2\nworkers: 0\nthreads: 1\ndevice: cpu\n" + extra)
    return path


def _torchrun(args, dump):
    env = {**os.environ, "RTPOSE_DUMP_REPLICA_WEIGHTS": str(dump)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "rtpose.cli", "train", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_torchrun_two_processes_keep_identical_replicas_and_resume(tiny_data):
    config = _config(tiny_data, "ddp")
    dump = tiny_data / "replicas"
    first = _torchrun([str(config), "--epochs", "1"], dump)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("checkpoint:") == 1                # rank 0 alone reports
    assert "x 2 processes" in first.stderr
    # Resumed, still as two processes: rank 0 validates while rank 1 waits at the barrier.
    second = _torchrun([str(config), "--resume", str(tiny_data / "ddp/last.pt")], dump)
    assert second.returncode == 0, second.stderr[-3000:]
    lines = [json.loads(line) for line in (tiny_data / "ddp/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all("val_AP" in m for m in lines)

    replicas = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    saved = read_checkpoint(tiny_data / "ddp/last.pt")
    assert saved["epoch"] == 2
    for name, tensor in replicas[0].items():
        # Parameters by DDP's all-reduce, batch-norm statistics by the per-epoch average.
        assert torch.equal(tensor, replicas[1][name]), name
        assert torch.equal(tensor, saved["model"][name]), name
    # Training moved the weights away from the seed's initial ones.
    from trainer.model import SimplePoseNet
    from rtpose.model_meta import ModelMeta
    init = SimplePoseNet(ModelMeta.from_json(saved["meta"]).skeleton, config_from_dict(saved["config"]).model_config())
    assert not all(torch.equal(p, replicas[0][n]) for n, p in init.state_dict().items())


def test_processes_key_trains_in_two_processes_started_by_rtpose_train(tiny_data):
    config = _config(tiny_data, "procs", "processes: 2\n")
    result = rtpose("train", config, "--epochs", "1", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 processes" in result.stderr and result.stderr.count("training simplepose") == 1
    assert result.stdout.strip() == f"checkpoint: {tiny_data / 'procs/last.pt'}"
    saved = read_checkpoint(tiny_data / "procs/last.pt")
    assert saved["epoch"] == 1 and "val_AP" in saved["metrics"]


def test_two_processes_on_a_time_budget_stop_together_with_identical_replicas(tiny_data):
    """Rank 0's clock sets both processes' learning rate and last step: a replica that stopped alone would
    leave the other waiting in an all-reduce, one on another learning rate would drift apart."""
    config = _config(tiny_data, "procs_budget", "processes: 2\nmax_minutes: 0.1\nval_every: 1000\n")
    config.write_text(config.read_text().replace("epochs: 2", "epochs: 10000"))
    dump = tiny_data / "budget_replicas"
    result = rtpose("train", config, timeout=120, env={"RTPOSE_DUMP_REPLICA_WEIGHTS": str(dump)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget of 0.1 minutes reached" in result.stderr
    last = json.loads((tiny_data / "procs_budget/metrics.jsonl").read_text().splitlines()[-1])
    assert last["elapsed_seconds"] <= 1.25 * 6.0 and "val_AP" in last
    replicas = [torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, tensor in replicas[0].items():
        assert torch.equal(tensor, replicas[1][name]), name


def test_processes_that_fail_end_in_one_line(tiny_data):
    config = _config(tiny_data, "procs_bad", "processes: 2\n")
    config.write_text(config.read_text().replace(str(tiny_data / "train/annotations.json"),
                                                 str(tiny_data / "missing.json")))
    result = rtpose("train", config, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.json" in lines[0], result.stderr


def test_more_processes_on_cuda_than_gpus_is_one_line_naming_the_fix(tiny_data):
    """One GPU per process: here (no GPU, or one on a GPU machine) two processes on CUDA cannot start."""
    import torch
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has a GPU for each of two processes")
    config = _config(tiny_data, "procs_gpus", "processes: 2\n")
    config.write_text(config.read_text().replace("device: cpu", "device: cuda"))
    result = rtpose("train", config, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    gpus = torch.cuda.device_count()
    assert len(lines) == 1 and lines[0] == (f"error: 2 processes on CUDA need a GPU each, and this machine has "
                                            f"{gpus}: set processes: {gpus} or fewer, or device: cpu"), result.stderr
    if not gpus:                                          # one process asking for CUDA where there is none
        config.write_text(config.read_text().replace("processes: 2", "processes: 1"))
        result = rtpose("train", config, timeout=120)
        assert result.returncode == 1 and result.stderr.strip() == (
            "error: device: cuda, but torch sees no CUDA GPU (device: auto picks the CPU then)"), result.stderr


def test_amp_and_grad_clip_train_and_resume_on_cpu(tiny_data):
    config = _config(tiny_data, "amp", "amp: true\ngrad_clip: 1.0\n")
    result = runner.invoke(app, ["train", str(config), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    ckpt = read_checkpoint(tiny_data / "amp/last.pt")
    assert ckpt["config"]["amp"] is True and ckpt["config"]["grad_clip"] == 1.0
    assert "scaler" in ckpt                       # empty on CPU (bfloat16 needs no loss scaling)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    metrics = json.loads((tiny_data / "amp/metrics.jsonl").read_text().splitlines()[0])
    assert metrics["loss"] == metrics["loss"] and metrics["loss"] < 1e3   # finite, not NaN
    result = runner.invoke(app, ["train", str(config), "--resume", str(tiny_data / "amp/last.pt")])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tiny_data / "amp/last.pt")["epoch"] == 2
    # The flip test from the command line, on the checkpoint just trained.
    out = tiny_data / "flip.json"
    result = runner.invoke(app, ["eval", str(tiny_data / "amp/last.pt"), "--annotations",
                                 str(tiny_data / "val/annotations.json"), "--flip", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "AP" in json.loads(out.read_text())


@pytest.mark.parametrize("extra, message", [
    ({"amp": "yes"}, "'amp' must be true or false"),
    ({"grad_clip": -1}, "'grad_clip' must be >= 0"),
    ({"mixed_precision": True}, "unknown key 'mixed_precision'"),
    ({"processes": 0}, "'processes' must be a whole number >= 1"),
    ({"max_minutes": -5}, "'max_minutes' must be >= 0"),
])
def test_amp_and_grad_clip_config_errors(extra, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"train_annotations": "a.json", **extra})
