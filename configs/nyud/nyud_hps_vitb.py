# NYUD-v2, all tasks, hard parameter sharing on ViT-B: the multi-task baseline (448x576 training crops).
_base_ = ["../_base_/datasets/nyud.py", "../_base_/models/hps_vit_base.py", "../_base_/schedules/adam_poly_40k.py"]

# NYUD-v2 frames are 448x576 here: the position embedding is built for that size.
model = dict(backbone=dict(img_size=(448, 576)))

# Delta_m against the single-task baselines (nyud_stl_vitb_*.py) once they have been tested.
evaluation = dict(baselines="work_dirs/nyud_stl_vitb_{task}/eval.json")
