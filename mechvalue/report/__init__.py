"""Reading a run folder into figures and one self-contained HTML report: :mod:`.html` (the page), tables
(:mod:`.tables`), figures (:mod:`.figures`, :mod:`.heatmaps`, :mod:`.tokens`), the summary verdicts
(:mod:`.summary`, on the CI helpers of :mod:`.stats`), the run header, wall time and sample sizes
(:mod:`.sections`), the glossary (:mod:`.glossary`), example generations (:mod:`.examples`), neuron-audit
cards (:mod:`.cards`), the paper anchors (:mod:`.anchors`) and the headless-browser check (:mod:`.browser`).
"""
