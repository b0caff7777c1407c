"""The run-time type checker the test suite gives jaxtyping's import hook (see ``conftest.py``).

beartype, with PEP 484's numeric tower (an ``int`` is accepted where ``float`` is annotated, as in plain
Python), checks every argument, including each array's dtype and named dimensions.
"""

from beartype import BeartypeConf, beartype

typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
