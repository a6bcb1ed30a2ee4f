# PASCAL-Context, all tasks, TaskExpert on ViT-L in the published setting (Adam 2e-5, poly, 40k iterations, batch 2).
_base_ = [
    "../_base_/datasets/pascal_context.py",
    "../_base_/models/taskexpert_vit_large.py",
    "../_base_/schedules/adam_poly_40k.py",
]

# Delta_m against the same single-task baselines as the HPS configs (pascal_stl_vitl_*.py).
evaluation = dict(baselines="work_dirs/pascal_stl_vitl_{task}/eval.json")
