# NYUD-v2 single-task baseline for Delta_m: depth alone, same backbone, decoder and schedule.
_base_ = ["./nyud_hps_vitl.py"]

tasks = dict(_delete_=True, depth={{_base_.tasks.depth}})
evaluation = dict(baselines=None)
