# PASCAL-Context, all tasks, hard parameter sharing on ViT-B: the multi-task baseline (512x512 training crops).
_base_ = [
    "../_base_/datasets/pascal_context.py",
    "../_base_/models/hps_vit_base.py",
    "../_base_/schedules/adam_poly_40k.py",
]

# Delta_m against the single-task baselines (pascal_stl_vitb_*.py) once they have been tested.
evaluation = dict(baselines="work_dirs/pascal_stl_vitb_{task}/eval.json")
