"""Every shipped config loads, passes the key checks and builds its model and datasets."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from vismtl.config import load_config
from vismtl.data import build_dataset
from vismtl.engine.settings import read_settings
from vismtl.models import build_model
from vismtl.tasks import build_tasks

CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path)
    read_settings(cfg)
    tasks = build_tasks(cfg.tasks)
    with torch.device("meta"):  # shapes only: no memory for large backbones
        model = build_model(cfg.model, tasks)
    assert model.task_names == list(tasks)
    for split in ("train", "val"):
        dataset = build_dataset(cfg.data[split], tasks, f"data.{split}")
        assert len(dataset) > 0


def test_single_task_configs_cover_every_quickstart_task():
    quickstart = load_config(ROOT / "configs" / "quickstart.py")
    for name in quickstart.tasks:
        single = load_config(ROOT / "configs" / "scenes" / f"stl_{name}.py")
        assert list(single.tasks) == [name]
        assert single.tasks[name] == quickstart.tasks[name]
        assert single.model == quickstart.model and single.train == quickstart.train
