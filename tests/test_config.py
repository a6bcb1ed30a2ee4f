"""Bad configs fail at start-up with one message that names the file, the key and the cause."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, TINY_CONFIG, subprocess_env
from vismtl.config import ConfigError, load_config
from vismtl.engine import train


def write_config(tmp_path, body: str):
    path = tmp_path / "cfg.py"
    path.write_text(f"_base_ = ['{TINY_CONFIG}']\n{body}\n")
    return path


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.py"):
        load_config(tmp_path / "nope.py")


def test_missing_config_file_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'quickstart.py'"):
        load_config(ROOT / "configs" / "quickstrat.py")


def test_misspelt_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'trian' in config .*cfg\.py \(did you mean 'train'\?\)"):
        load_config(write_config(tmp_path, "trian = dict(max_iters=3)"))


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("train = dict(max_iter=3)", r"unknown key 'max_iter' in train \(did you mean 'max_iters'\?\)"),
        ("optimizer = dict(lrr=0.1)", r"unknown key 'lrr' in optimizer \(did you mean 'lr'\?\)"),
        (
            "model = dict(decoder=dict(chanels=8))",
            r"unknown key 'chanels' in model.decoder \(did you mean 'channels'\?\)",
        ),
        ("model = dict(backbone=dict(nmae='x'))", r"unknown key 'nmae' in model.backbone"),
        ("tasks = dict(depth=dict(los_weight=2.0))", r"unknown key 'los_weight' in tasks.depth"),
        (
            "tasks = dict(depth=dict(kind='dept'))",
            r"unknown task kind 'dept' for task 'depth' \(did you mean 'depth'\?\)",
        ),
        (
            "data = dict(train=dict(type='scene'))",
            r"unknown dataset type 'scene' in data.train \(did you mean 'scenes'\?\)",
        ),
        ("data = dict(train=dict(lenght=5))", r"unknown key 'lenght' in data.train \(scenes\)"),
        ("schedule = dict(type='polly')", r"unknown schedule.type 'polly' \(did you mean 'poly'\?\)"),
        ("model = dict(backbone=dict(name='resnet1'))", r"unknown backbone 'resnet1'.*did you mean"),
        ("data = dict(train=dict(transforms=[dict(type='HorizontalFlop')]))", r"unknown transform 'HorizontalFlop'"),
        ("data = dict(train=dict(transforms=[dict(type='Rotate')]))", r"'Rotate' .* cannot carry to depth and normals"),
    ],
)
def test_bad_keys_fail_before_training(tmp_path, body, pattern):
    with pytest.raises(ConfigError, match=pattern):
        train(write_config(tmp_path, body), work_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [  # each was a traceback from inside PyTorch or the trainer
        ({"train.max_iters": "two"}, "train.max_iters must be an integer, not 'two'"),
        ({"train.grad_clip": "10"}, "train.grad_clip must be a number or None, not '10'"),
        ({"train.amp": 1}, "train.amp must be True or False, not 1"),
        ({"data.batch_size": 0}, "data.batch_size must be at least 1 (got 0)"),
        ({"data.num_workers": -1}, "data.num_workers must be 0 (no worker processes) or more, not -1"),
        ({"optimizer.lr": -1.0}, "optimizer: Invalid learning rate: -1.0"),
        ({"seed": -1}, "seed (--seed) must lie in [0, 2**32), not -1"),
        (
            {"schedule.warmup_iters": -5},
            "schedule.warmup_iters must be 0 or more and schedule.warmup_ratio in (0, 1], not -5 and 0.01",
        ),
    ],
)
def test_values_of_the_wrong_type_or_range_fail_before_training_naming_the_key(tmp_path, options, message):
    with pytest.raises(ConfigError) as raised:
        train(TINY_CONFIG, work_dir=tmp_path / "run", cfg_options=options)
    assert str(raised.value) == message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_output_folders_that_cannot_be_made_fail_before_the_run(tmp_path):
    from vismtl.engine import test

    (tmp_path / "taken").write_text("a file where the folders would go")
    bad = tmp_path / "taken" / "sub"
    with pytest.raises(ConfigError) as raised:
        train(TINY_CONFIG, work_dir=bad)
    assert str(raised.value) == f"cannot make the --work-dir folder {bad} (Not a directory): choose another --work-dir"
    with pytest.raises(ConfigError) as raised:  # before the checkpoint (there is none) is read
        test(TINY_CONFIG, tmp_path / "none.pth", work_dir=tmp_path / "run", show_dir=bad)
    assert str(raised.value) == f"cannot make the --show-dir folder {bad} (Not a directory): choose another --show-dir"


def test_integers_are_numbers_and_none_is_taken_where_allowed():
    from vismtl.config import call_with_config
    from vismtl.engine.settings import TrainSettings

    settings = call_with_config(TrainSettings, {"grad_clip": 1, "load_from": None, "max_iters": 2}, "train")
    assert settings.grad_clip == 1 and settings.max_iters == 2


def test_cfg_options_typo_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'max_iterz' in train \(did you mean 'max_iters'\?\)"):
        train(TINY_CONFIG, work_dir=tmp_path, cfg_options={"train.max_iterz": 3})
    with pytest.raises(ConfigError, match=r"no key 'traim'.*did you mean 'train'"):
        load_config(TINY_CONFIG, {"traim.max_iters": 3})


def test_cfg_options_override_applies():
    cfg = load_config(TINY_CONFIG, {"train.max_iters": 3, "model.decoder.channels": 8})
    assert cfg.train.max_iters == 3 and cfg.model.decoder.channels == 8


def test_command_line_prints_one_clear_line(tmp_path):
    """tools/train.py exits with status 2 and a single 'error:' line, no traceback."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train.py"), str(write_config(tmp_path, "optimizer = dict(lrr=1)"))],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown key 'lrr' in optimizer (did you mean 'lr'?); valid keys: backbone_lr_mult, betas, lr, "
        "momentum, no_decay_norm_and_bias, type, weight_decay"
    ]
