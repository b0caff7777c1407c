"""Foundations every layer uses: the ten values and circumplex (:mod:`.values`), errors (:mod:`.errors`),
hook names (:mod:`.hooks`), the forward-pass context (:mod:`.context`), atomic artifact files
(:mod:`.artifacts`) and the OpenAI-compatible endpoint client (:mod:`.endpoint`).

Imports nothing else from mechvalue.
"""
