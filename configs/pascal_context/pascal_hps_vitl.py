# PASCAL-Context, all tasks, hard parameter sharing on ViT-L: the multi-task baseline (512x512 training crops).
_base_ = [
    "../_base_/datasets/pascal_context.py",
    "../_base_/models/hps_vit_large.py",
    "../_base_/schedules/adam_poly_40k.py",
]

# Delta_m against the single-task baselines (pascal_stl_vitl_*.py) once they have been tested.
evaluation = dict(baselines="work_dirs/pascal_stl_vitl_{task}/eval.json")
