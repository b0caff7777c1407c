"""Evaluation: judge-free value scores (:mod:`.scores`), value judges (:mod:`.judges`,
:mod:`.openai_judge`) and neuron / direction audits (:mod:`.audit`).
"""
