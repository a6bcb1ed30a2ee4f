# Single-task baseline for Delta_m: the quickstart model and budget with only the saliency task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, saliency={{_base_.tasks.saliency}})
evaluation = dict(baselines=None)
