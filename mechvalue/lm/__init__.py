"""Model I/O: loading models (:mod:`.models`), chat prompts and token batches (:mod:`.prompts`), streaming
activation statistics (:mod:`.collect`), and steered generation and scoring (:mod:`.generation`).

Everything that runs a model's forward pass lives here.
"""
