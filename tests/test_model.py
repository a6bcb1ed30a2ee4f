"""MultiTaskModel: outputs per task at input resolution for any backbone, odd sizes, save/load."""

from __future__ import annotations

import pytest
import torch

from vismtl.models import MultiTaskModel, build_model
from vismtl.tasks import build_tasks

TASKS = dict(
    semseg=dict(kind="semseg", num_classes=5),
    parts=dict(kind="parts", num_classes=4),
    saliency=dict(kind="saliency"),
    normals=dict(kind="normals"),
    depth=dict(kind="depth"),
    edge=dict(kind="edge"),
)
EXPECTED_CHANNELS = dict(semseg=5, parts=4, saliency=1, normals=3, depth=1, edge=1)


DECODERS = {
    "hps": dict(type="hps", channels=16),
    "taskexpert": dict(type="taskexpert", channels=16, num_experts=3),
}


def make(backbone: str, decoder: str = "hps", **options) -> MultiTaskModel:
    torch.manual_seed(0)
    cfg = dict(backbone=dict(name=backbone), decoder={**DECODERS[decoder], **options})
    return build_model(cfg, build_tasks(TASKS))


@pytest.mark.parametrize("decoder", list(DECODERS))
@pytest.mark.parametrize("backbone", ["test_resnet", "test_convnext", "test_vit"])
@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_forward_backward_every_task_at_input_size(backbone, size, decoder):
    model = make(backbone, decoder)
    image = torch.randint(0, 256, (2, 3, *size), dtype=torch.uint8)
    outputs = model(image)
    assert set(outputs) == set(TASKS)
    for name, logits in outputs.items():
        assert logits.shape == (2, EXPECTED_CHANNELS[name], *size)
    sum(o.float().mean() for o in outputs.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_uint8_and_float_inputs_agree():
    model = make("test_resnet").eval()
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a, b = model(image), model(image.float())
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_normalisation_is_imagenet_by_default():
    model = make("test_resnet")
    pixel = torch.tensor([124.0, 116.0, 104.0]).view(1, 3, 1, 1)
    normalised = pixel * model.input_scale + model.input_shift
    expected = (pixel / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(normalised, expected)


def test_state_dict_round_trip(tmp_path):
    model = make("test_resnet").eval()
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    clone = make("test_resnet")
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    clone.load_state_dict(torch.load(path, weights_only=True))
    clone.eval()
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        for name, value in model(image).items():
            torch.testing.assert_close(clone(image)[name], value)


def test_single_task_model_has_one_head():
    model = build_model(dict(backbone=dict(name="test_resnet")), build_tasks(dict(depth=dict(kind="depth"))))
    assert model.task_names == ["depth"]
    assert set(model(torch.zeros(2, 3, 64, 64))) == {"depth"}


@pytest.mark.parametrize("norm", ["gn", "none"])
def test_decoder_norm_choices(norm):
    model = make("test_resnet", "hps", norm=norm)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoder.modules())
    assert model(torch.zeros(2, 3, 64, 64))["semseg"].shape == (2, 5, 64, 64)


def test_hps_decodes_vit_features_at_a_finer_stride():
    """upsample=4 turns the ViT's stride-16 features into stride-4 task features."""
    model = build_model(
        dict(backbone=dict(name="test_vit"), decoder=dict(type="hps", channels=8, upsample=4)),
        build_tasks(dict(depth=dict(kind="depth"))),
    )
    features = model.decoder(model.backbone(torch.zeros(2, 3, 64, 96)))
    assert features["depth"].shape == (2, 8, 16, 24)
