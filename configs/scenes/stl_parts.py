# Single-task baseline for Delta_m: the quickstart model and budget with only the parts task.
_base_ = ["../quickstart.py"]

tasks = dict(_delete_=True, parts={{_base_.tasks.parts}})
evaluation = dict(baselines=None)
