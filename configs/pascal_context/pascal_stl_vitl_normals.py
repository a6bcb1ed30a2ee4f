# PASCAL-Context single-task baseline for Delta_m: normals alone, same backbone, decoder and schedule.
_base_ = ["./pascal_hps_vitl.py"]

tasks = dict(_delete_=True, normals={{_base_.tasks.normals}})
evaluation = dict(baselines=None)
