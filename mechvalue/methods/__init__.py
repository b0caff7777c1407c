"""The four papers as pipelines built from the layers below: :mod:`.valuelocate`, :mod:`.dual`, :mod:`.conva`,
:mod:`.neva`, and :mod:`.registry`, the one list of steering methods.
"""
