# The embedded default: all six tasks on generated scenes, a ResNet-18 trained from scratch
# on a CPU in about 6 minutes (800 iterations of 8 images at 128x128).
# `python tools/train.py configs/quickstart.py` writes work_dirs/quickstart/.
_base_ = [
    "_base_/datasets/scenes.py",
    "_base_/models/hps_resnet18.py",
    "_base_/schedules/adamw_poly.py",
]

train = dict(max_iters=800, checkpoint_interval=200)

# Delta_m against the single-task baselines (configs/scenes/stl_*.py), once they have run:
#   for t in semseg parts saliency normals depth edge; do python tools/train.py configs/scenes/stl_$t.py; done
evaluation = dict(baselines="work_dirs/stl_{task}/eval.json")
