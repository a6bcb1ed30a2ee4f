"""TaskExpert decoder: gates, memory, the fused op inside the model, gate maps."""

from __future__ import annotations

import torch

from vismtl.models import build_model
from vismtl.tasks import build_tasks

TASKS = build_tasks(dict(semseg=dict(kind="semseg", num_classes=5), depth=dict(kind="depth")))


def make(**decoder):
    torch.manual_seed(0)
    cfg = dict(backbone=dict(name="test_resnet", out_indices=(1, 2, 3, 4)), decoder=dict(type="taskexpert", **decoder))
    return build_model(cfg, TASKS).eval()


def features(model, size=(64, 96)):
    torch.manual_seed(1)
    image = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    return model.backbone(image * model.input_scale + model.input_shift)


def test_gate_maps_are_softmax_weights_per_layer_and_pixel():
    model = make(channels=16, num_experts=3, grid_stride=8)
    gates = model.decoder.gate_maps(features(model))
    assert set(gates) == {"semseg", "depth"}
    assert gates["semseg"].shape == (2, 4, 4, 8, 12)  # 4 layers, 3 experts + memory, a stride-8 grid of 64x96
    torch.testing.assert_close(gates["semseg"].sum(dim=2), torch.ones(2, 4, 8, 12))
    assert not torch.allclose(gates["semseg"], gates["depth"])  # each task has its own gates


def test_memory_update_rule_changes_the_output():
    add, replace = make(channels=16, num_experts=3), make(channels=16, num_experts=3, memory_update="replace")
    replace.load_state_dict(add.state_dict())
    with torch.no_grad():
        a, b = add.decoder(features(add)), replace.decoder(features(replace))
    assert not torch.allclose(a["depth"], b["depth"])


def test_fused_kernel_and_reference_give_the_same_model_output():
    """The Triton path (interpreted on the CPU) inside the decoder equals the reference path."""
    fused, reference = make(channels=12, num_experts=3, gating_impl="triton"), make(channels=12, num_experts=3)
    reference.load_state_dict(fused.state_dict())
    feats = features(fused, size=(32, 48))
    with torch.no_grad():
        for name, value in reference.decoder(feats).items():
            torch.testing.assert_close(fused.decoder(feats)[name], value, rtol=1e-4, atol=1e-5)


def test_one_linear_map_per_layer_makes_experts_and_gates():
    model = make(channels=16, num_experts=3)
    layer = model.decoder.layers[0]
    assert layer.project.out_features == 3 * 16 + 2 * (3 + 1)
    assert model.decoder.grid_stride == 16  # the tapped stride closest to 16 by default


def test_show_dir_writes_gate_maps(tmp_path):
    """tools/test.py --show-dir writes, next to each panel, the map of winning experts per task and layer."""
    import cv2

    from conftest import TINY_CONFIG
    from vismtl.engine import test, train

    options = {
        "model.decoder": dict(_delete_=True, type="taskexpert", channels=8, num_experts=3, grid_stride=8),
        "train.max_iters": 2,
        "data.val.length": 2,
    }
    train(TINY_CONFIG, work_dir=tmp_path, cfg_options=options)
    test(
        TINY_CONFIG,
        tmp_path / "checkpoints" / "latest.pth",
        work_dir=tmp_path,
        show_dir=tmp_path / "show",
        cfg_options=options,
    )
    gates = cv2.imread(str(tmp_path / "show" / "000000_gates.png"))
    assert gates.shape == (4 * (64 + 18), 6 * 64, 3)  # 4 tapped layers x 6 tasks
    colours = {tuple(c) for c in gates[18:82:4, :64:4].reshape(-1, 3)}
    assert 1 <= len(colours) <= 4  # at most 3 experts and the memory
