"""Every shipped config loads, passes the key checks and builds its model; dataset sections are checked."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT
from vismtl.config import check_call, load_config
from vismtl.data import DATASETS, build_dataset
from vismtl.engine.settings import read_settings
from vismtl.models import build_model
from vismtl.tasks import build_tasks

CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path, {"model.backbone.pretrained": False})  # no weights download in tests
    read_settings(cfg)
    tasks = build_tasks(cfg.tasks)
    with torch.device("meta"):  # shapes only: no memory for large backbones
        model = build_model(cfg.model, tasks)
    assert model.task_names == list(tasks)
    for split in ("train", "val"):
        options = dict(cfg.data[split])
        kind = options.pop("type")
        check_call(DATASETS[kind], options, f"data.{split}", extra=["tasks"])
        sources = options.get("sources", [])
        generated = kind == "scenes" or (kind == "histology" and all(s["type"] == "generated" for s in sources))
        if generated:  # can be built here; the other datasets need their folders
            assert len(build_dataset(cfg.data[split], tasks, f"data.{split}")) > 0


@pytest.mark.parametrize(
    ("multi", "prefix"),
    [
        ("quickstart.py", "scenes/stl_"),
        ("pascal_context/pascal_hps_vitl.py", "pascal_context/pascal_stl_vitl_"),
        ("pascal_context/pascal_hps_vitb.py", "pascal_context/pascal_stl_vitb_"),
        ("nyud/nyud_hps_vitl.py", "nyud/nyud_stl_vitl_"),
        ("nyud/nyud_hps_vitb.py", "nyud/nyud_stl_vitb_"),
    ],
)
def test_single_task_configs_match_their_multi_task_config(multi, prefix):
    """Each task has a single-task config with the same model, schedule and task settings."""
    base = load_config(ROOT / "configs" / multi)
    for name in base.tasks:
        single = load_config(ROOT / "configs" / f"{prefix}{name}.py")
        assert list(single.tasks) == [name]
        assert single.tasks[name] == base.tasks[name]
        assert single.model == base.model and single.train == base.train and single.optimizer == base.optimizer
        assert base.evaluation.baselines.format(task=name) == f"work_dirs/{prefix.split('/')[-1]}{name}/eval.json"
