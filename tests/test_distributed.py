"""Distributed training on the CPU: 2 ranks x B/2 equal 1 rank x B; torchrun end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from conftest import ROOT, TINY_CONFIG, subprocess_env
from vismtl.config import ConfigError
from vismtl.data import ScenesDataset
from vismtl.data.builder import build_train_loader
from vismtl.engine.checkpoint import load_checkpoint
from vismtl.engine.losses import multitask_loss
from vismtl.engine.sync_bn import CPUSyncBatchNorm, convert_sync_batchnorm
from vismtl.models import build_model
from vismtl.tasks import build_tasks

TASK_CFG = dict(
    semseg=dict(kind="semseg", num_classes=7),
    saliency=dict(kind="saliency"),
    normals=dict(kind="normals"),
    depth=dict(kind="depth"),
    edge=dict(kind="edge"),
)
MODEL_CFG = dict(backbone=dict(name="test_resnet", out_indices=(1, 2, 3, 4)), decoder=dict(type="hps", channels=8))
BATCH = 4


def make_batch():
    """A fixed batch of 4 scenes where depth is labelled on samples 0 and 3 only (uneven over ranks)."""
    tasks = build_tasks(TASK_CFG)
    loader = build_train_loader(ScenesDataset(tasks, length=8, size=(64, 64)), BATCH, 0, seed=0)
    batch = next(iter(loader))
    batch["task_mask"][:, list(tasks).index("depth")] = torch.tensor([True, False, False, True])
    batch["task_mask"][2, list(tasks).index("edge")] = False
    return batch


def make_model(sync: bool):
    torch.manual_seed(0)
    model = build_model(MODEL_CFG, build_tasks(TASK_CFG))
    return convert_sync_batchnorm(model, torch.device("cpu")) if sync else model


def step(model, batch):
    """One forward/backward: the loss, the per-task means and the flattened gradient."""
    tasks = build_tasks(TASK_CFG)
    result = multitask_loss(model(batch["image"]), batch, tasks)
    result.total.backward()
    module = model.module if isinstance(model, DistributedDataParallel) else model
    grad = torch.cat([p.grad.flatten() for p in module.parameters()])
    return result.total.detach(), result.per_task(list(tasks)), grad, module


def worker(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    batch = make_batch()
    half = {k: (v[2 * rank : 2 * rank + 2] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    model = DistributedDataParallel(make_model(sync=True))
    total, per_task, grad, module = step(model, half)
    totals = [torch.zeros(()) for _ in range(2)]
    dist.all_gather(totals, total)
    if rank == 0:
        running = {k: v for k, v in module.state_dict().items() if "running" in k}
        torch.save({"total": sum(totals) / 2, "per_task": per_task, "grad": grad, "running": running}, out_file)
    dist.destroy_process_group()


def test_two_ranks_with_half_batches_equal_one_rank(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path / "out.pth")), nprocs=2, join=True)
    ranks = torch.load(tmp_path / "out.pth", weights_only=True)
    total, per_task, grad, module = step(make_model(sync=False), make_batch())
    assert ranks["total"] == pytest.approx(total.item(), rel=1e-5)
    assert ranks["per_task"].keys() == per_task.keys()
    for name, value in per_task.items():
        assert ranks["per_task"][name] == pytest.approx(value, rel=1e-5), name
    torch.testing.assert_close(ranks["grad"], grad, rtol=1e-4, atol=1e-6)
    # SyncBN pooled the statistics of both halves: running stats match the single process.
    for name, value in module.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(ranks["running"][name], value, rtol=1e-4, atol=1e-6)


def test_sync_bn_conversion_keeps_state():
    model = make_model(sync=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_sync_batchnorm(model, torch.device("cpu"))
    assert any(isinstance(m, CPUSyncBatchNorm) for m in converted.modules())
    for key, value in converted.state_dict().items():
        assert torch.equal(value, before[key])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_ranks_trains(tmp_path):
    """The documented command: torchrun --nproc_per_node=2 tools/train.py CONFIG --launcher pytorch."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(ROOT / "tools" / "train.py"),
        str(TINY_CONFIG),
        "--launcher",
        "pytorch",
        "--work-dir",
        str(tmp_path),
        "--cfg-options",
        "train.max_iters=4",
        "train.sync_bn=True",
    ]
    process = subprocess.Popen(
        command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:  # never leave ranks behind waiting on a rendezvous
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "latest.pth")
    assert checkpoint["iteration"] == 4 and checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert (tmp_path / "eval.json").is_file()


def test_ranks_share_a_node_s_gpus_in_turn_only_where_asked(monkeypatch):
    """Three ranks on a node of two GPUs: whole-slide inference (``share_gpus``) puts the third on
    GPU 0 under a gloo group (NCCL refuses two ranks on one GPU); training refuses it, saying how
    many processes to start, before any process group is joined."""
    from vismtl.engine import distributed

    started = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: started.__setitem__("device", device))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: "backend" in started)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: started.__setitem__("backend", backend))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: int(os.environ["RANK"]))
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 3)
    for name, value in {"WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1", "RANK": "2", "LOCAL_RANK": "2"}.items():
        monkeypatch.setenv(name, value)

    info = distributed.init_distributed("pytorch", share_gpus=True)
    assert (info.rank, info.local_rank, info.device) == (2, 2, torch.device("cuda", 0))
    assert started == {"device": torch.device("cuda", 0), "backend": "gloo"}

    started.clear()
    with pytest.raises(ConfigError, match=r"process 2 of this node, which has 2 GPU\(s\).*--nproc_per_node=2"):
        distributed.init_distributed("pytorch")
    assert started == {}

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.init_distributed("pytorch")
    assert info.device == torch.device("cuda", 1) and started == {"device": torch.device("cuda", 1), "backend": "nccl"}
