"""Pure tensor math, no model calls: value directions and probes (:mod:`.vectors`), MLP neurons
(:mod:`.neurons`), and metrics and statistics over score tables (:mod:`.metrics`).
"""
