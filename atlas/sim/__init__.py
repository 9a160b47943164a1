"""Scripted demonstrations in the real LIBERO simulator (`atlas data collect`).

scene.py     the task's render-free physics env and its camera env, layouts from the sampler
expert.py    the privileged-state pick-and-place expert and its grasp options
episode.py   search the grasp options render-free, re-render the chosen run with set_state
demo_file.py the released LIBERO HDF5 layout, per-demo parts and the task file
worker.py    one layout seed from sampling to a written demo part
collect.py   the resumable, parallel collection and its per-task summary
"""
