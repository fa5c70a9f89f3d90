"""Train, resume, export and evaluate, end to end on a tiny synthetic set, as the CLI runs them."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from rtpose.cli import app
from rtpose.engine.onnxruntime_engine import OnnxRuntimeEngine
from rtpose.model_meta import META_KEY, DecoderConfig, ModelMeta
from rtpose.skeleton import COCO
from rtpose.synthetic.scene import SceneConfig, write_dataset
from tests.conftest import TINY_MODEL
from trainer.annotations import load_keypoint_set
from trainer.checkpoint import CheckpointEngine, read_checkpoint
from trainer.config import ConfigError, load_config
from trainer.evaluate import evaluate

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    scene = SceneConfig(width=128, height=96, min_people=1, max_people=2)
    write_dataset(root / "train", 12, seed=1, config=scene)
    write_dataset(root / "val", 4, seed=2, config=scene)
    config = root / "exp.yaml"
    config.write_text(
        f"train_annotations: {root / 'train/annotations.json'}\n"
        f"val_annotations: {root / 'val/annotations.json'}\n"
        f"output_dir: {root / 'run'}\n" + TINY_MODEL + "epochs: 2\nbatch_size: 4\nworkers: 0\n")
    result = runner.invoke(app, ["train", str(config), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return root, config


def test_checkpoint_holds_everything_needed_to_resume(tiny_run):
    root, _ = tiny_run
    ckpt = read_checkpoint(root / "run/last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "config", "meta"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"]["input_width"] == 128
    assert ModelMeta.from_json(ckpt["meta"]).skeleton.name == "coco"


def test_resume_continues_from_the_saved_epoch(tiny_run):
    root, config = tiny_run
    result = runner.invoke(app, ["train", str(config), "--resume", str(root / "run/last.pt")])
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line)["epoch"] for line in (root / "run/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert read_checkpoint(root / "run/last.pt")["epoch"] == 2


@pytest.mark.parametrize("change", ["skeleton", "neck_width"])
def test_resume_refuses_a_checkpoint_of_another_model_in_one_line(tiny_run, tmp_path, change):
    root, config = tiny_run
    ckpt = read_checkpoint(root / "run/last.pt")
    if change == "skeleton":    # as made before the COCO skeleton's 4 cross links
        meta = json.loads(ckpt["meta"])
        meta["skeleton"]["limbs"] = meta["skeleton"]["limbs"][:-4]
        ckpt["meta"], expected = json.dumps(meta), "groups 17 coco keypoints by 27 limbs"
    else:
        ckpt["config"]["neck_width"], expected = 2 * ckpt["config"]["neck_width"], "another architecture"
    torch.save(ckpt, tmp_path / "other.pt")
    result = runner.invoke(app, ["train", str(config), "--resume", str(tmp_path / "other.pt")])
    assert result.exit_code == 1 and expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_tensorboard_reads_what_metrics_jsonl_says(tiny_run):
    """Every epoch's loss, learning rate and validation AP, the resumed run's too, in TensorBoard's own reader."""
    root, _ = tiny_run
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                      reason="the tensorboard package is not installed (the dev extra has it)")
    board = accumulator.EventAccumulator(str(root / "run/tensorboard"))
    board.Reload()
    metrics = [json.loads(line) for line in (root / "run/metrics.jsonl").read_text().splitlines()]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("val/AP", "val_AP")):
        events = board.Scalars(tag)
        assert [e.step for e in events] == [m["epoch"] for m in metrics]
        assert [e.value for e in events] == pytest.approx([m[key] for m in metrics], rel=1e-6)


def test_a_fresh_run_into_a_used_directory_replaces_its_metrics_and_logs(tiny_run, tmp_path):
    root, config = tiny_run
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(config.read_text().replace(f"output_dir: {root / 'run'}", f"output_dir: {tmp_path / 'run'}"))
    for _ in range(2):
        result = runner.invoke(app, ["train", str(fresh), "--epochs", "1"])
        assert result.exit_code == 0, result.output
    assert "held an earlier run" in result.output
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]
    assert len(list((tmp_path / "run/tensorboard").glob("events.out.tfevents.*"))) == 1


def test_export_writes_self_describing_onnx_matching_torch(tiny_run):
    root, _ = tiny_run
    out = root / "model.onnx"
    result = runner.invoke(app, ["export", str(root / "run/last.pt"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "max |diff| heatmaps" in result.output
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = ModelMeta.from_json({p.key: p.value for p in proto.metadata_props}[META_KEY])
    assert (meta.input_width, meta.input_height, meta.stride) == (128, 96, 4)
    assert {"torch", "onnx", "rtpose", "opset"} <= set(meta.versions)
    engine = OnnxRuntimeEngine(out)
    for batch in (1, 3):                                   # dynamic batch
        x = np.random.default_rng(batch).standard_normal((batch, 3, 96, 128)).astype(np.float32)
        got = engine.infer(x)
        expected = CheckpointEngine.from_file(root / "run/last.pt", device="cpu").infer(x)
        assert [o.shape for o in got] == [(batch, 17, 24, 32), (batch, COCO.num_offset_channels, 24, 32), (batch, 34, 24, 32)]
        assert all(np.abs(a - b).max() < 1e-4 for a, b in zip(got, expected))


def test_eval_of_onnx_and_checkpoint_find_the_same_people(tiny_run):
    root, _ = tiny_run
    runner.invoke(app, ["export", str(root / "run/last.pt"), "--output", str(root / "model.onnx")])
    kset = load_keypoint_set(root / "val/annotations.json")
    # A barely trained model: a low threshold makes sure there are people to compare.
    loose = DecoderConfig(heatmap_threshold=0.01, person_threshold=0.0)
    a = evaluate(CheckpointEngine.from_file(root / "run/last.pt", device="cpu"), kset, loose)
    b = evaluate(OnnxRuntimeEngine(root / "model.onnx"), kset, loose)
    assert len(a.results) > 0 and len(a.results) == len(b.results)
    ka = np.array([r["keypoints"] for r in a.results])
    kb = np.array([r["keypoints"] for r in b.results])
    # The untrained maps are nearly flat, so a 1e-7 difference can swap two
    # almost equal peaks now and then; most keypoints must agree exactly.
    assert np.median(np.abs(ka - kb)) < 0.01 and np.mean(np.abs(ka - kb) < 0.05) > 0.75
    assert a.stats["AP"] == pytest.approx(b.stats["AP"], abs=0.01)


def test_eval_cli_prints_the_table_and_writes_json(tiny_run):
    root, _ = tiny_run
    out = root / "eval.json"
    result = runner.invoke(app, ["eval", str(root / "run/last.pt"), "--annotations",
                                 str(root / "val/annotations.json"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in result.output
    assert set(json.loads(out.read_text())) >= {"AP", "AP50", "AR"}


def test_user_weights_load_into_the_model(tiny_run, tmp_path):
    from trainer.model import SimplePoseNet, load_weights
    from trainer.checkpoint import load_model
    model, meta, config = load_model(tiny_run[0] / "run/last.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    fresh = SimplePoseNet(meta.skeleton, config.model_config())
    load_weights(fresh, tmp_path / "weights.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    other = SimplePoseNet(meta.skeleton)                 # default widths: another architecture
    with pytest.raises(ValueError, match="does not fit this model"):
        load_weights(other, tmp_path / "weights.pt")


def test_ema_weights_are_what_the_checkpoint_gives_and_resume_keeps_both(tiny_run, tmp_path):
    """ema_decay: checkpoints hold the averaged weights as "model" (what eval and export load) and the raw
    ones to resume from; the average trails the raw weights and resuming carries on from both."""
    root, config = tiny_run
    ema_config = tmp_path / "ema.yaml"
    ema_config.write_text(config.read_text().replace(str(root / "run"), str(tmp_path / "run")) + "ema_decay: 0.9\n")
    assert runner.invoke(app, ["train", str(ema_config), "--epochs", "1"]).exit_code == 0
    first = read_checkpoint(tmp_path / "run/last.pt")
    name = "keypoint_head.1.bias"
    averaged, raw = first["model"][name], first["training_model"][name]
    assert not torch.equal(averaged, raw)
    # Started from the initial weights, the average stays nearer them than training went.
    initial = torch.full_like(raw[:17], -4.0)
    assert (averaged[:17] - initial).abs().mean() < (raw[:17] - initial).abs().mean()
    result = runner.invoke(app, ["train", str(ema_config), "--resume", str(tmp_path / "run/last.pt")])
    assert result.exit_code == 0, result.output
    second = read_checkpoint(tmp_path / "run/last.pt")
    assert second["epoch"] == 2 and not torch.equal(second["model"][name], averaged)
    # 12 images in batches of 4: the average was updated 3 times an epoch, and counted on after the resume.
    assert (first["ema_updates"], second["ema_updates"]) == (3, 6)
    exported = runner.invoke(app, ["export", str(tmp_path / "run/last.pt"), "--output", str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0, exported.output


def test_a_time_budget_ends_the_run_within_it_with_the_schedule_run_out(tiny_run, tmp_path):
    """max_minutes: the learning rate follows the clock down to its floor, the run stops mid-way through its
    epochs, validates and saves inside the budget; resumed, it has nothing left unless given more time."""
    root, config = tiny_run
    budgeted = tmp_path / "budget.yaml"
    budgeted.write_text(config.read_text().replace(str(root / "run"), str(tmp_path / "run"))
                        .replace("epochs: 2", "epochs: 10000") + "max_minutes: 0.1\nval_every: 1000\n")
    result = runner.invoke(app, ["train", str(budgeted)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    assert 1 < last["epoch"] < 10000 and "time budget of 0.1 minutes reached" in result.output
    # The run's own clock, validation included; a step or a validation may end a little past the budget.
    assert last["elapsed_seconds"] <= 1.25 * 6.0
    # The first epoch validates (to time it), then only the last: the final validation is not skipped.
    assert [i for i, m in enumerate(lines) if "val_AP" in m] == [0, len(lines) - 1]
    assert last["lr"] == pytest.approx(0.02 * 2e-3, rel=0.05)   # cosine to 2% of lr: the schedule ran out
    assert read_checkpoint(tmp_path / "run/last.pt")["epoch"] == last["epoch"]

    again = runner.invoke(app, ["train", str(budgeted), "--resume", str(tmp_path / "run/last.pt")])
    assert again.exit_code == 0 and "nothing left to train" in again.output, again.output
    assert len((tmp_path / "run/metrics.jsonl").read_text().splitlines()) == len(lines)
    more = runner.invoke(app, ["train", str(budgeted), "--resume", str(tmp_path / "run/last.pt"),
                               "--max-minutes", "0.15"])
    assert more.exit_code == 0, more.output
    resumed = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert resumed[-1]["epoch"] > last["epoch"] and 6.0 < resumed[-1]["elapsed_seconds"] <= 1.25 * 9.0


def test_export_at_another_input_size(tiny_run, tmp_path):
    """The same checkpoint exported for a larger input: metadata, output maps and parity follow the new size."""
    root, _ = tiny_run
    out = tmp_path / "large.onnx"
    result = runner.invoke(app, ["export", str(root / "run/last.pt"), "--output", str(out), "--input-size", "160x128"])
    assert result.exit_code == 0, result.output
    assert float(result.output.split("heatmaps ")[1].split(",")[0]) < 1e-4
    engine = OnnxRuntimeEngine(out)
    assert (engine.meta.input_width, engine.meta.input_height) == (160, 128)
    heatmaps = engine.infer(np.zeros((1, 3, 128, 160), np.float32))[0]
    assert heatmaps.shape == (1, 17, 32, 40)
    odd = runner.invoke(app, ["export", str(root / "run/last.pt"), "--output", str(out), "--input-size", "150x128"])
    assert odd.exit_code != 0 and "multiples of 32" in odd.output


def test_eval_multi_scale_on_a_checkpoint_and_a_clear_line_for_an_onnx(tiny_run, tmp_path):
    root, _ = tiny_run
    args = ["--annotations", str(root / "val/annotations.json"), "--scales", "0.75,1,1.5"]
    result = runner.invoke(app, ["eval", str(root / "run/last.pt"), *args])
    assert result.exit_code == 0, result.output
    assert "Average Precision" in result.output
    runner.invoke(app, ["export", str(root / "run/last.pt"), "--output", str(tmp_path / "m.onnx")])
    fixed = runner.invoke(app, ["eval", str(tmp_path / "m.onnx"), *args])
    assert fixed.exit_code != 0 and "multi-scale needs a checkpoint" in fixed.output
    bad = runner.invoke(app, ["eval", str(root / "run/last.pt"), *args[:2], "--scales", "1,big"])
    assert bad.exit_code != 0 and "--scales is a comma-separated list" in bad.output


def _loss_inputs(seed: int = 0):
    """Model outputs (with gradients) and a batch of targets as the bottom-up losses take them."""
    g = torch.Generator().manual_seed(seed)
    n, k, d, h, w = 2, 17, 38, 12, 16
    outputs = tuple(t.requires_grad_() for t in (torch.rand(n, k, h, w, generator=g),
                                                 torch.randn(n, 2 * d, h, w, generator=g),
                                                 torch.randn(n, 2 * k, h, w, generator=g)))
    heatmaps = torch.rand(n, k, h, w, generator=g) ** 4              # mostly background, some keypoint cells
    batch = {"heatmaps": heatmaps, "heatmap_mask": (torch.rand(n, h, w, generator=g) > 0.1).float(),
             "offsets": torch.randn(n, 2 * d, h, w, generator=g),
             "offset_mask": (torch.rand(n, d, h, w, generator=g) > 0.8).float(),
             "refinements": torch.randn(n, 2 * k, h, w, generator=g),
             "refinement_mask": (torch.rand(n, k, h, w, generator=g) > 0.8).float()}
    return outputs, batch


def _losses_and_grads(function, config):
    outputs, batch = _loss_inputs()
    losses = function(outputs, batch, config)
    losses["loss"].backward()
    return {k: v.detach() for k, v in losses.items()}, [o.grad for o in outputs]


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler (the fallback is tested below)")
def test_compiled_losses_and_their_gradients_equal_the_plain_ones():
    from trainer.config import TrainConfig
    from trainer.train import bottomup_losses, loss_function
    config = TrainConfig(train_annotations="x.json", compile_loss=True)
    messages = []
    compiled, compiled_grads = _losses_and_grads(loss_function(config, log=messages.append), config)
    plain, plain_grads = _losses_and_grads(bottomup_losses, config)
    assert messages == []                              # compiled, not fallen back
    assert set(compiled) == set(plain) == {"loss", "heatmap_loss", "offset_loss", "refinement_loss"}
    for name in plain:
        torch.testing.assert_close(compiled[name], plain[name], rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_compile_loss_falls_back_to_the_plain_losses_in_one_line(monkeypatch):
    from trainer.config import TrainConfig
    from trainer.train import bottomup_losses, loss_function

    def broken_compile(function):
        def call(*args):
            raise RuntimeError("no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    config = TrainConfig(train_annotations="x.json", compile_loss=True)
    messages = []
    losses = loss_function(config, log=messages.append)
    first, _ = _losses_and_grads(losses, config)
    second, _ = _losses_and_grads(losses, config)
    plain, _ = _losses_and_grads(bottomup_losses, config)
    assert len(messages) == 1 and "torch.compile failed (RuntimeError)" in messages[0]
    for name in plain:
        assert torch.equal(first[name], plain[name]) and torch.equal(second[name], plain[name])


def test_amp_on_a_cpu_without_fast_bfloat16_trains_in_float32_and_says_so(monkeypatch):
    from trainer import train
    from trainer.config import TrainConfig

    config, cpu, messages = TrainConfig(train_annotations="x.json", amp=True), torch.device("cpu"), []
    monkeypatch.setattr(train, "cpu_bfloat16_is_fast", lambda: False)
    slow = train.usable_amp(config, cpu, messages.append)
    assert not slow.amp and dataclasses.replace(slow, amp=True) == config     # nothing else changed
    assert len(messages) == 1 and "training in float32" in messages[0]
    assert train.usable_amp(config, torch.device("cuda"), messages.append).amp      # float16 there
    monkeypatch.setattr(train, "cpu_bfloat16_is_fast", lambda: True)
    assert train.usable_amp(config, cpu, messages.append) is config and len(messages) == 1


def test_fast_bfloat16_is_what_the_cpu_has():
    """torch's test against the CPU's own flags (x86 Linux): AVX-512 BW, VL and DQ."""
    from trainer.train import cpu_bfloat16_is_fast

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "flags" not in cpuinfo.read_text():
        pytest.skip("no x86 /proc/cpuinfo here")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    assert cpu_bfloat16_is_fast() == ({"avx512bw", "avx512vl", "avx512dq"} <= flags)


CONFIG_DIR = Path(__file__).parent.parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)


def test_the_30_minute_recipe_is_the_shipped_one_on_a_time_budget():
    # configs/30min.yaml says it is configs/default.yaml with 29.5 minutes in place of 24 epochs
    # and its own run folder; this keeps the two from drifting apart.
    configs = [load_config(CONFIG_DIR / name).to_dict()
               for name in ("default.yaml", "30min.yaml")]
    differing = {key for key in configs[0] if configs[0][key] != configs[1][key]}
    assert differing == {"output_dir", "epochs", "max_minutes", "val_every"}
    assert 0 < configs[1]["max_minutes"] <= 30


@pytest.mark.parametrize("sigma", [0.7, 0.9])
def test_heatmap_min_sigma_is_the_width_of_a_small_persons_peaks(tmp_path, sigma):
    # A person of 20x20 input pixels is small enough for the least sigma; its keypoints sit on
    # map cells, so the cell next to one holds exp(-1 / (2 sigma^2)).
    from trainer.train import training_dataset
    scene = SceneConfig(width=320, height=256, min_people=1, max_people=1)
    kset = load_keypoint_set(write_dataset(tmp_path, 1, seed=0, config=scene))
    record = kset.images[0]
    record.keypoints[:] = 0
    record.keypoints[0, 0] = (4 * 10 + 1.5, 4 * 8 + 1.5, 2)      # map cell (10, 8)
    record.areas[:] = 400
    path = tmp_path / "exp.yaml"
    path.write_text(f"train_annotations: a.json\nheatmap_min_sigma: {sigma}\nflip_prob: 0\n")
    config = load_config(path)
    meta = ModelMeta(input_width=320, input_height=256)
    heatmap = training_dataset(config, kset, meta)[0]["heatmaps"][0].numpy()
    assert heatmap[8, 10] == 1.0
    assert heatmap[8, 11] == pytest.approx(np.exp(-1 / (2 * sigma ** 2)), rel=1e-5)


def test_heatmap_min_sigma_defaults_and_bounds(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train_annotations: a.json\n")
    assert load_config(path).heatmap_min_sigma == 0.9          # what the shipped model was trained with
    for bad in (0, -1, 2.5):
        path.write_text(f"train_annotations: a.json\nheatmap_min_sigma: {bad}\n")
        with pytest.raises(ConfigError, match="heatmap_min_sigma"):
            load_config(path)


def test_models_too_narrow_for_channels_last_train_in_nchw_on_cpu(tmp_path):
    # oneDNN's channels-last backward of a strided 1x1 convolution over fewer than 16 channels ends
    # the process on an AVX-512 CPU (trainer.train.training_memory_format); wider models keep it.
    from trainer.train import training_memory_format
    path = tmp_path / "exp.yaml"
    for widths, expected, note in (("[8, 8, 16, 16, 16]", torch.contiguous_format, "NCHW"),
                                   ("[16, 24, 48, 96, 160]", torch.channels_last, "")):
        path.write_text(f"train_annotations: a.json\nwidths: {widths}\n")
        model = load_config(path).build_model(COCO)
        memory_format, said = training_memory_format(model, torch.device("cpu"))
        assert memory_format == expected and note in said and bool(said) == bool(note)
