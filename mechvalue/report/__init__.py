"""Reading a run folder into figures and one self-contained HTML report: :mod:`.html`, tables
(:mod:`.tables`), figures (:mod:`.figures`, :mod:`.heatmaps`, :mod:`.tokens`), the paper anchors
(:mod:`.anchors`) and the headless-browser check (:mod:`.browser`).
"""
