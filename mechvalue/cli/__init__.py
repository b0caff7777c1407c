"""The ``mechvalue`` command line: argument parsing (:mod:`.main`) and commands (:mod:`.commands`,
:mod:`.steering`). Heavy libraries (torch, TransformerLens) are imported only inside commands.
"""
