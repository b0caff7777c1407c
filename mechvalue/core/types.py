"""Type aliases for public signatures: the array-likes mechvalue's functions accept.

Shapes of tensors are written with jaxtyping (``Float[Tensor, "layer d_model"]``); these aliases name the
looser inputs a function converts itself (``np.asarray`` / ``torch.as_tensor``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

#: a 1-D run of numbers: a list, a numpy array or a tensor
Numbers = Sequence[float] | np.ndarray | Tensor
#: class labels (0/1 or integers): a list, a numpy array or a tensor
Labels = Sequence[int] | np.ndarray | Tensor
