"""Parameters and multiply-accumulates of the baseline (HPS) and TaskExpert decoders, or of
the models of given configs.

    python benchmarks/model_cost.py [--size 512 512] [--tasks pascal|nyud]
    python benchmarks/model_cost.py --config configs/cerberus/quickstart_tissue.py ... --size 320 320

Counted with torch's FlopCounterMode on the meta device (shapes only, no weights, no
download): MACs = FLOPs / 2 of the convolutions and matrix products of one forward pass
of one image. Decoder configs are those of configs/_base_/models and configs/*/..._taskexpert_*.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from vismtl.config import ConfigError, load_config
from vismtl.models import build_model
from vismtl.tasks import build_tasks

BACKBONES = {
    "ViT-B/16": dict(name="vit_base_patch16_384", out_indices=(2, 5, 8, 11)),
    "ViT-L/16": dict(name="vit_large_patch16_384", out_indices=(5, 11, 17, 23)),
}
TASK_CONFIGS = {"pascal": "configs/_base_/datasets/pascal_context.py", "nyud": "configs/_base_/datasets/nyud.py"}


def decoders() -> dict[str, dict]:
    return {
        "HPS": dict(load_config("configs/_base_/models/hps_vit_large.py").model.decoder),
        "TaskExpert": dict(load_config("configs/_base_/models/taskexpert_vit_large.py").model.decoder),
    }


def cost(model_cfg: dict, tasks, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(params M, decoder+heads params M, GMACs, decoder+heads GMACs) of one forward pass."""
    with torch.device("meta"), torch.no_grad():
        model = build_model(model_cfg, tasks)
        image = torch.zeros(1, 3, *size)
        with FlopCounterMode(display=False) as whole:
            model(image)
        with FlopCounterMode(display=False) as backbone_only:
            model.backbone_features(image)
    params = sum(p.numel() for p in model.parameters())
    decoder_params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone."))
    macs = whole.get_total_flops() / 2
    return params / 1e6, decoder_params / 1e6, macs / 1e9, (macs - backbone_only.get_total_flops() / 2) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--tasks", choices=list(TASK_CONFIGS), default="pascal")
    parser.add_argument("--config", nargs="+", help="configs whose models to count instead (their own tasks)")
    args = parser.parse_args()
    if args.config:
        try:
            return configs_cost(args.config, tuple(args.size))
        except ConfigError as err:
            parser.error(str(err))
    tasks = build_tasks(load_config(TASK_CONFIGS[args.tasks]).tasks)
    size = tuple(args.size)
    print(f"{args.tasks} tasks ({', '.join(tasks)}), input {size[0]}x{size[1]}, one image")
    print(f"{'backbone':10s} {'decoder':11s} {'params M':>9s} {'decoder M':>10s} {'GMACs':>8s} {'decoder GMACs':>14s}")
    for backbone_name, backbone in BACKBONES.items():
        for decoder_name, decoder in decoders().items():
            model_cfg = dict(backbone={**backbone, "img_size": size}, decoder=decoder)
            params, decoder_params, macs, decoder_macs = cost(model_cfg, tasks, size)
            numbers = f"{params:9.1f} {decoder_params:10.2f} {macs:8.1f} {decoder_macs:14.1f}"
            print(f"{backbone_name:10s} {decoder_name:11s} {numbers}")


def configs_cost(paths: list[str], size: tuple[int, int]) -> None:
    """One row per config: its model with its tasks, at ``size``; the ratio to the first."""
    print(f"input {size[0]}x{size[1]}, one image")
    print(f"{'config':45s} {'params M':>9s} {'decoder M':>10s} {'GMACs':>8s} {'decoder GMACs':>14s} {'vs first':>9s}")
    first = None
    for path in paths:
        cfg = load_config(path, {"model.backbone.pretrained": False})  # shapes only: no download
        params, decoder_params, macs, decoder_macs = cost(cfg.model, build_tasks(cfg.tasks), size)
        first = first or macs
        print(f"{path:45s} {params:9.1f} {decoder_params:10.2f} {macs:8.1f} {decoder_macs:14.1f} {macs / first:8.1f}x")


if __name__ == "__main__":
    main()
