# NYUD-v2 single-task baseline for Delta_m: edge alone, same backbone, decoder and schedule.
_base_ = ["./nyud_hps_vitb.py"]

tasks = dict(_delete_=True, edge={{_base_.tasks.edge}})
evaluation = dict(baselines=None)
