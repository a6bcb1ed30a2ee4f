# Single-task baseline for Delta_m: the quickstart model and budget with only the normals task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, normals={{_base_.tasks.normals}})
evaluation = dict(baselines=None)
