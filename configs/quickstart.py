# The embedded default: all six tasks on generated scenes, trained from scratch on a CPU
# in minutes. `python tools/train.py configs/quickstart.py` writes work_dirs/quickstart/.
_base_ = [
    "_base_/datasets/scenes.py",
    "_base_/models/hps_resnet18.py",
    "_base_/schedules/adamw_poly.py",
]
