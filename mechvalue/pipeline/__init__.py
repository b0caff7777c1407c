"""The main job: the typed run configuration (:mod:`.config`), the run folder and the resumable step runner
(:mod:`.run`), the steps (:mod:`.steps`) and the steering study (:mod:`.study`).
"""
