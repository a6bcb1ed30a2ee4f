"""Training and testing end to end: outputs, checkpoints, exact resume, clear checkpoint errors."""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_CONFIG, folder_held_by_another_run, subprocess_env
from vismtl.config import ConfigError
from vismtl.engine import test as run_test
from vismtl.engine import train
from vismtl.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from vismtl.engine.cli import run_command
from vismtl.io import write_json


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests that only read its outputs."""
    work_dir = tmp_path_factory.mktemp("run")
    results = train(TINY_CONFIG, work_dir=work_dir)
    return work_dir, results


def test_training_writes_logs_checkpoints_and_eval(trained):
    work_dir, results = trained
    assert (work_dir / "config.py").is_file()
    records = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["iter"] for r in train_records] == [2, 4, 6]
    assert {"loss_semseg", "loss_depth", "lr", "data_time"} <= set(train_records[0])
    assert any("val" in r for r in records)
    assert list((work_dir / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (work_dir / "checkpoints").iterdir())
    assert checkpoints == ["iter_2.pth", "iter_4.pth", "iter_6.pth", "latest.pth"]
    latest = load_checkpoint(work_dir / "checkpoints" / "latest.pth")
    assert latest["iteration"] == 6 and {"model", "optimizer", "scheduler", "rng"} <= set(latest)
    saved = json.loads((work_dir / "eval.json").read_text())
    assert set(saved["tasks"]) == {"semseg", "parts", "saliency", "normals", "depth", "edge"}
    assert saved["tasks"]["semseg"]["mIoU"] == pytest.approx(results["semseg"]["mIoU"])
    assert "delta_m" in saved


def test_lr_follows_warmup_then_poly(trained):
    work_dir, _ = trained
    records = [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]
    lrs = {r["iter"]: r["lr"] for r in records if "lr" in r}
    # base 1e-3, warm-up 2 iterations from 0.01, then poly(0.9) over the remaining 4 (logged after the step).
    assert lrs[2] == pytest.approx(1e-3 * (1 - 0 / 4) ** 0.9)
    assert lrs[4] == pytest.approx(1e-3 * (1 - 2 / 4) ** 0.9)
    assert lrs[6] == pytest.approx(0.0, abs=1e-12)


def test_test_tool_writes_table_eval_json_and_panels(trained, tmp_path, capsys):
    work_dir, train_results = trained
    baselines = tmp_path / "stl.json"
    baselines.write_text(json.dumps({"tasks": {t: dict(v) for t, v in train_results.items()}}))
    results, delta = run_test(
        TINY_CONFIG,
        work_dir / "checkpoints" / "latest.pth",
        work_dir=tmp_path,
        show_dir=tmp_path / "show",
        export_dir=tmp_path / "export",
        cfg_options={"evaluation.baselines": str(baselines)},
    )
    assert delta == pytest.approx(0.0, abs=1e-9)  # the same model as its own baseline
    assert results["depth"]["rmse"] == pytest.approx(train_results["depth"]["rmse"], rel=1e-6)
    printed = capsys.readouterr().out
    assert "mIoU (higher better)" in printed and "Delta_m vs single-task baselines: +0.00 %" in printed
    assert json.loads((tmp_path / "eval.json").read_text())["delta_m"] == pytest.approx(0.0, abs=1e-9)
    panels = sorted((tmp_path / "show").glob("*.png"))
    assert len(panels) == 8
    import cv2

    panel = cv2.imread(str(panels[0]))
    assert panel.shape == (2 * (64 + 18), 7 * 64, 3)  # input + 6 tasks; prediction over ground truth
    exported = {
        p.parent.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "export").glob("*/000000.png")
    }
    assert set(exported) == {"semseg", "parts", "saliency", "normals", "depth", "edge"}
    assert len(list((tmp_path / "export" / "edge").glob("*.png"))) == 8  # every val image, named by its id
    assert exported["edge"].dtype == np.uint8 and exported["edge"].shape == (64, 64)
    assert exported["semseg"].max() < 7 and exported["parts"].max() < 4
    assert exported["depth"].dtype == np.uint16 and exported["normals"].shape == (64, 64, 3)


def _final_weights(work_dir):
    return load_checkpoint(work_dir / "checkpoints" / "latest.pth")["model"]


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """A run killed with SIGKILL mid-training and restarted with --resume ends bit-identical."""
    command = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        str(TINY_CONFIG),
        "--cfg-options",
        "train.max_iters=16",
        "train.checkpoint_interval=3",
        "data.num_workers=1",
    ]
    env = subprocess_env()
    subprocess.run([*command, "--work-dir", str(tmp_path / "straight")], check=True, env=env, capture_output=True)

    work_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--work-dir", str(work_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (work_dir / "checkpoints" / "iter_6.pth").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(work_dir / "checkpoints" / "latest.pth")["iteration"]
    # iter_6.pth is written before latest.pth is pointed at it: a kill in between leaves iteration 3
    assert killed_at in (3, 6, 9, 12, 15)
    resumed = subprocess.run(
        [*command, "--work-dir", str(work_dir), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {work_dir / 'checkpoints' / 'latest.pth'} at iteration {killed_at}" in resumed.stderr

    expected, got = _final_weights(tmp_path / "straight"), _final_weights(work_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    iterations = [json.loads(line)["iter"] for line in (work_dir / "log.jsonl").read_text().splitlines()]
    assert iterations == sorted(iterations)  # records past the checkpoint were dropped before resuming


def test_sigterm_to_the_process_group_ends_training_in_one_line(tmp_path):
    """As a scheduler's time limit does: the training and its loader workers all get SIGTERM. One
    line saying how to go on, exit status 143, no traceback (the workers' end used to print one
    after it, from the loader's cleanup at exit)."""
    command = [sys.executable, str(ROOT / "tools" / "train.py"), str(TINY_CONFIG), "--work-dir", str(tmp_path)]
    command += ["--cfg-options", "train.max_iters=400", "train.checkpoint_interval=2", "data.num_workers=2"]
    process = subprocess.Popen(
        command,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while not (tmp_path / "checkpoints" / "iter_2.pth").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be stopped"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    last = "terminated (SIGTERM): rerun with --resume to continue from the last checkpoint saved"
    assert stderr.strip().splitlines()[-1] == last


def test_corrupt_checkpoint_is_named(tmp_path, trained):
    work_dir, _ = trained
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes((work_dir / "checkpoints" / "latest.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*corrupt\.pth: the file is corrupt, truncated"):
        run_test(TINY_CONFIG, corrupt, work_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*absent\.pth"):
        run_test(TINY_CONFIG, tmp_path / "absent.pth", work_dir=tmp_path)


def test_a_checkpoint_with_python_objects_says_how_to_keep_its_weights(tmp_path, trained):
    """Many training scripts save their arguments beside the weights; weights_only=True refuses
    them, and torch's own message leads with weights_only=False. Ours names the object and gives
    a command that saves the weights alone, which then load."""
    work_dir, _ = trained
    weights = load_checkpoint(work_dir / "checkpoints" / "latest.pth")["model"]
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=0.1)}, foreign)
    with pytest.raises(CheckpointError) as raised:
        run_test(TINY_CONFIG, foreign, work_dir=tmp_path)
    said = str(raised.value)
    objects = "it holds Python objects besides weights (argparse.Namespace)"
    assert said.startswith(f"cannot read checkpoint {foreign}: {objects}")
    assert "weights_only=False" not in said.split("python -c")[0]  # advice only inside the command for trusted files
    command = said.split('python -c "')[1].rstrip('"')
    subprocess.run([sys.executable, "-c", command], cwd=tmp_path, check=True)
    assert run_test(TINY_CONFIG, tmp_path / "weights.pth", work_dir=tmp_path / "run")


def test_checkpoint_of_another_architecture_is_refused(tmp_path, trained):
    work_dir, _ = trained
    with pytest.raises(CheckpointError) as error:
        run_test(
            TINY_CONFIG,
            work_dir / "checkpoints" / "latest.pth",
            work_dir=tmp_path,
            cfg_options={"model.backbone.name": "test_convnext", "model.backbone.out_indices": (0, 1, 2, 3)},
        )
    message = str(error.value)
    assert "was made for another architecture" in message
    assert "missing" in message and "unexpected" in message
    assert "'name': 'test_resnet'" in message  # says what the checkpoint was made with


class FillsUp(io.BytesIO):
    """A file on a disk with ``room`` bytes left: a write past them is cut short, the next one fails."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data) -> int:
        taken = min(len(data), self.room - self.tell())
        if taken <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(memoryview(data)[:taken])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, where every write finds no space")
def test_a_full_disk_is_one_line_naming_the_file_and_the_file_before_is_kept(tmp_path, monkeypatch, capsys):
    """Writes that find the disk full: torch.save's own error for a checkpoint (an "enforce fail"
    after a write cut short) and Python's for a JSON file (sent to /dev/full) both become the
    OSError, naming the file; the temporary file is removed and the file before kept; a tool says
    it in one line, exit status 1."""

    def on_a_full_disk(fd, mode):
        os.close(fd)
        return FillsUp(100) if "b" in mode else open("/dev/full", mode)

    checkpoint, metrics = tmp_path / "latest.pth", tmp_path / "eval.json"
    checkpoint.write_bytes(b"the last checkpoint")
    monkeypatch.setattr(os, "fdopen", on_a_full_disk)
    with pytest.raises(OSError) as raised:
        atomic_save({"w": torch.zeros(1000)}, checkpoint)
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(checkpoint))
    assert "enforce fail" in str(raised.value.__context__)  # what torch.save raised
    with pytest.raises(OSError) as raised:
        write_json(metrics, {"miou": 1.0})
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(metrics))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]
    assert checkpoint.read_bytes() == b"the last checkpoint"
    status = run_command(lambda: atomic_save({"w": torch.zeros(1000)}, checkpoint), interrupted="rerun with --resume")
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {os.strerror(errno.ENOSPC)} writing {checkpoint}: free some space there; rerun with --resume"
    ]


def test_a_second_training_into_the_same_work_dir_is_refused(tmp_path):
    """Its checkpoints and log would interleave with the first's; it fails before writing anything."""
    with folder_held_by_another_run(tmp_path) as pid:
        held = rf"another run is writing to {re.escape(str(tmp_path))} \(pid {pid} on .*\): wait for it to end"
        with pytest.raises(ConfigError, match=held + ", or choose another --work-dir"):
            train(TINY_CONFIG, work_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_a_diverging_training_stops_in_one_line_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    """lr 1e30: the weights stop being finite within a few steps, between two logged losses.
    Saved over latest.pth, they would be what every resume starts from."""
    options = {"optimizer.lr": 1e30, "train.checkpoint_interval": 1, "train.log_interval": 6}
    assert run_command(lambda: train(TINY_CONFIG, work_dir=tmp_path, cfg_options=options)) == 1
    said = capsys.readouterr().err.strip().splitlines()[-1]
    failed = re.fullmatch(
        r"error: weights are not finite after iteration (\d) \(not saved\); lower optimizer.lr or set train.grad_clip",
        said,
    )
    assert failed, said
    latest = load_checkpoint(tmp_path / "checkpoints" / "latest.pth")
    assert latest["iteration"] == int(failed.group(1)) - 1
    assert all(torch.isfinite(weight).all() for weight in latest["model"].values() if weight.is_floating_point())


def test_amp_on_a_cpu_without_bfloat16_instructions_is_warned_of(tmp_path, monkeypatch, caplog):
    """oneDNN emulates them there: the histology model ran at 0.24-0.61x float32's rate."""
    from vismtl.engine import precision

    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="vismtl"):
        train(TINY_CONFIG, work_dir=tmp_path, amp=True, cfg_options={"train.max_iters": 1})
    assert "this CPU has no bfloat16 instructions: --amp runs the model 2-4x slower here" in caplog.text


def test_resume_from_missing_path_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"--resume: checkpoint not found: .*nope\.pth"):
        train(TINY_CONFIG, work_dir=tmp_path, resume=str(tmp_path / "nope.pth"))


def test_gradient_accumulation_equals_the_whole_batch(tmp_path):
    """2 micro-batches of 2 give the weights of 1 batch of 4 (no BatchNorm, every sample labelled, SGD)."""
    config = tmp_path / "no_bn.py"
    config.write_text(
        f"_base_ = ['{TINY_CONFIG}']\n"
        "tasks = dict(_delete_=True, semseg=dict(kind='semseg', num_classes=7), depth=dict(kind='depth'))\n"
        "model = dict(backbone=dict(name='test_convnext', out_indices=(0, 1, 2, 3)), decoder=dict(norm='gn'))\n"
        "data = dict(val=None)\n"
        "train = dict(max_iters=2, checkpoint_interval=2)\n"
        # SGD: the update is linear in the gradient (Adam's first step is its sign, which
        # turns float round-off in near-zero gradients into full-size differences).
        "optimizer = dict(_delete_=True, type='sgd', lr=0.05, momentum=0.0, weight_decay=0.0)\n"
    )
    train(config, work_dir=tmp_path / "whole", cfg_options={"data.batch_size": 4})
    train(config, work_dir=tmp_path / "accumulated", cfg_options={"data.batch_size": 2, "train.accumulate": 2})
    whole, accumulated = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "accumulated")
    for name, value in whole.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_image_level_classes_are_exported_as_a_table_and_maps_as_images(tmp_path):
    """`tools/test.py --export-dir` with a tissue-class task failed (it had no export); its classes
    now go to <task>.csv, one row per image, beside the dense tasks' PNGs."""
    from vismtl.engine.api import PredictionExporter
    from vismtl.tasks import build_tasks

    tasks = build_tasks(
        dict(
            tissue=dict(kind="patch_class", num_classes=3, class_names=["stroma", "tumour, solid", "fat"]),
            semseg=dict(kind="semseg", num_classes=4),
        )
    )
    batches = [(["a", "b"], [2, 1]), (["c"], [0])]
    for ranks, name in ((1, "tissue.csv"), (2, "tissue.rank1.csv")):
        exporter = PredictionExporter(tmp_path / str(ranks), tasks, rank=ranks - 1, ranks=ranks)
        for names, classes in batches:
            semseg = torch.arange(len(names) * 16).reshape(len(names), 4, 4) % 4
            exporter({"meta": {"name": names}}, {"tissue": torch.tensor(classes), "semseg": semseg})
        exporter.close()
        with open(tmp_path / str(ranks) / name, newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == ["image", "class", "class_name"]
        assert rows[1:] == [["a", "2", "fat"], ["b", "1", "tumour, solid"], ["c", "0", "stroma"]]
        assert sorted(p.name for p in (tmp_path / str(ranks) / "semseg").iterdir()) == ["a.png", "b.png", "c.png"]
