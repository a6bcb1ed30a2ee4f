# NYUD-v2, all tasks, TaskExpert on ViT-B in the published setting (Adam 2e-5, poly, 40k iterations, batch 2).
_base_ = [
    "../_base_/datasets/nyud.py",
    "../_base_/models/taskexpert_vit_base.py",
    "../_base_/schedules/adam_poly_40k.py",
]

# NYUD-v2 frames are 448x576 here: the position embedding is built for that size.
model = dict(backbone=dict(img_size=(448, 576)))

# Delta_m against the same single-task baselines as the HPS configs (nyud_stl_vitb_*.py).
evaluation = dict(baselines="work_dirs/nyud_stl_vitb_{task}/eval.json")
