"""Pure math on value directions in the residual stream (no model calls).

- :func:`diff_in_means` — difference-in-means vectors per layer;
- :func:`train_probe` / :class:`Probe` — logistic-regression probes and their unit normals
  (ConVA's value vectors), with held-out accuracy;
- :func:`orthogonalize`, :func:`svd_axes` — the dual-mechanism decomposition of an
  (intrinsic, prompted) pair into shared and unique axes (methods.md §5.5-5.6);
- :func:`mean_delta` — the shared "compliance" direction and its explained share (§5.8);
- :func:`circumplex_fit` — PCA of value axes, Procrustes to the circumplex, permutation p-value;
- :func:`random_directions` — matched random controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechvalue.analysis.checks import array2d, count, fail, matrix, positive, same_width, spread, vector
from mechvalue.core.errors import MechvalueError
from mechvalue.core.types import Labels


def diff_in_means(pos: Float[Tensor, "n_pos d"], neg: Float[Tensor, "n_neg d"]) -> Float[Tensor, " d"]:
    """``mean(pos) - mean(neg)`` over rows (per-example features, e.g. token-averaged residuals)."""
    pos, neg = matrix(pos, "pos", "diff_in_means"), matrix(neg, "neg", "diff_in_means")
    same_width(pos, neg, ("pos", "neg"), "diff_in_means")
    return pos.mean(0) - neg.mean(0)


def _batched_pair(a, b, where: str) -> tuple[Tensor, Tensor]:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] == 0:
        raise fail(where, f"a and b must be [..., d] with d >= 1, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    same_width(a, b, ("a", "b"), where)
    return a, b


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Cosine along the last axis (leading axes broadcast)."""
    a, b = _batched_pair(a, b, "cosine")
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@dataclass
class Probe:
    """A linear probe ``P(x) = sigmoid(w . x + b)`` on raw (unstandardized) features.

    Attributes:
        w: ``[d]`` weights in raw feature space; b: bias; accuracy: held-out accuracy (NaN if none).
    """

    w: Float[Tensor, " d"]
    b: float
    accuracy: float = float("nan")
    train_accuracy: float = float("nan")

    @property
    def direction(self) -> Float[Tensor, " d"]:
        """Unit normal ``w / |w|`` (ConVA's value vector)."""
        return self.w / self.w.norm()

    def logit(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
        x = torch.as_tensor(x).float()
        if x.ndim == 0 or x.shape[-1] != self.w.shape[0]:
            raise fail("Probe", f"x has shape {tuple(x.shape)}, expected [..., {self.w.shape[0]}] (the probe's width)")
        return x @ self.w + self.b

    def prob(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
        return torch.sigmoid(self.logit(x))


def train_test_split(n: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random index split (numpy ``default_rng(seed)``); both parts non-empty when n >= 2."""
    count(n, "n", "train_test_split", minimum=2)
    if not 0 < test_fraction < 1:
        raise MechvalueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(n * test_fraction)), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _penalty_kwargs(penalty: str) -> dict:
    """scikit-learn >= 1.8 spells the penalty as ``l1_ratio``; older versions as ``penalty``."""
    import sklearn

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}


def train_probe(x: Float[Tensor, "n d"], y: Labels, *, x_test: Tensor | None = None,
                y_test: Labels | None = None, C: float = 1.0, penalty: str = "l2",
                max_iter: int = 5000, standardize: bool = True, seed: int = 0) -> Probe:
    """Logistic-regression probe (scikit-learn), returned in raw feature space.

    With ``standardize`` the fit runs on z-scored features and the weights are mapped back
    (``w_raw = w / sd``, ``b_raw = b - sum(w mu / sd)``), so the probe applies to raw activations.
    """
    from sklearn.linear_model import LogisticRegression

    x = matrix(x, "x", "train_probe").double().numpy()
    y = _labels(y, "y", x.shape[0])
    if set(np.unique(y)) != {0, 1}:
        raise fail("train_probe", f"probe labels must contain both classes 0 and 1, got only {np.unique(y).tolist()}")
    x_test, y_test = _test_part(x_test, y_test, x.shape[1])
    positive(C, "C", "train_probe")
    count(max_iter, "max_iter", "train_probe")
    mu = x.mean(0) if standardize else np.zeros(x.shape[1])
    sd = x.std(0) + 1e-6 if standardize else np.ones(x.shape[1])
    if penalty not in ("l1", "l2"):
        raise MechvalueError(f"penalty must be 'l1' or 'l2', not {penalty!r}")
    solver = "saga" if penalty == "l1" else "lbfgs"
    clf = LogisticRegression(C=C, solver=solver, max_iter=max_iter, random_state=seed, **_penalty_kwargs(penalty))
    clf.fit((x - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())
    probe = Probe(torch.tensor(w, dtype=torch.float32), b)
    probe.train_accuracy = float(((probe.logit(torch.tensor(x)) > 0).numpy().astype(int) == y).mean())
    if x_test is not None:
        probe.accuracy = float(((probe.logit(x_test) > 0).numpy().astype(int) == y_test).mean())
    return probe


def _labels(y, name: str, n: int) -> np.ndarray:
    """0/1 labels, one per feature row."""
    y = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if y.ndim != 1 or y.shape[0] != n:
        raise fail("train_probe", f"{name} has shape {y.shape}: expected [{n}] labels, one per feature row")
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        odd = [v for v in np.unique(y).tolist() if v not in (0, 1)][:5] if y.dtype.kind in "biuf" else y.dtype
        raise fail("train_probe", f"{name} must hold labels 0 and 1, got {odd}")
    return y.astype(int)


def _test_part(x_test, y_test, width: int) -> tuple[Tensor | None, np.ndarray | None]:
    if (x_test is None) != (y_test is None):
        raise fail("train_probe", "x_test and y_test go together: pass both or neither")
    if x_test is None:
        return None, None
    xt = matrix(x_test, "x_test", "train_probe")
    if xt.shape[1] != width:
        raise fail("train_probe", f"x_test has shape {tuple(xt.shape)}, expected [n, {width}] (the width of x)")
    return xt, _labels(y_test, "y_test", xt.shape[0])


def push_amount(probe: Probe, x: Float[Tensor, "... d"], p0: float, direction: str = "raise") -> Float[Tensor, "..."]:
    """ConVA's closed form: ``eps = max(0, logit(P0) - w.x - b) / |w|`` (``"lower"``: min(0, .)).

    Adding ``eps * probe.direction`` to ``x`` puts the probe probability at ``p0`` exactly
    (when it was below it, for ``"raise"``).
    """
    if not 0 < p0 < 1:
        raise MechvalueError(f"P0 must be in (0, 1), got {p0}")
    if direction not in ("raise", "lower"):
        raise fail("push_amount", f"direction must be 'raise' or 'lower', got {direction!r}")
    vector(probe.w, "probe.w", "push_amount", nonzero=True)
    gap = float(np.log(p0 / (1 - p0))) - probe.logit(x)
    gap = gap.clamp(min=0) if direction == "raise" else gap.clamp(max=0)
    return gap / probe.w.norm()


def orthogonalize(a: Float[Tensor, " d"], b: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """``a`` minus its projection on ``b`` (``a ⊥ b``); ``b`` must not be the zero vector."""
    a, b = vector(a, "a", "orthogonalize"), vector(b, "b", "orthogonalize", nonzero=True)
    same_width(a, b, ("a", "b"), "orthogonalize")
    return a - (a @ b) / (b @ b) * b


@dataclass
class SVDAxes:
    """Shared and unique axes of an (intrinsic, prompted) vector pair (all ``[d]``, unit norm)."""

    shared: Float[Tensor, " d"]
    intrinsic: Float[Tensor, " d"]
    prompted: Float[Tensor, " d"]
    singular_values: Float[Tensor, " 2"]

    @property
    def basis(self) -> Float[Tensor, "d 2"]:
        """Orthonormal basis ``[u_shared, u_int]`` of the pair's plane."""
        return torch.stack([self.shared, self.intrinsic], dim=1)


def svd_axes(v_int: Float[Tensor, " d"], v_prompt: Float[Tensor, " d"], *, normalize: bool = True) -> SVDAxes:
    """Thin SVD of ``[v_int, v_prompt]`` with the sign conventions of methods.md §5.6.

    ``u_shared`` is flipped to agree with ``v_int + v_prompt``; ``u_int`` points from the
    prompted toward the intrinsic vector; ``u_prompt = -u_int``. With ``normalize`` both
    vectors are unit-normalised first, so ``u_shared ∝ v̂_int + v̂_prompt`` exactly. Zero,
    non-finite or (anti)parallel vectors are refused: they span no plane, so the axes are undefined.
    """
    a, b = vector(v_int, "v_int", "svd_axes", nonzero=True), vector(v_prompt, "v_prompt", "svd_axes", nonzero=True)
    same_width(a, b, ("v_int", "v_prompt"), "svd_axes")
    ad, bd = a.double(), b.double()
    sin = (1 - (ad @ bd / (ad.norm() * bd.norm())) ** 2).clamp(min=0).sqrt()
    if sin < 1e-6:
        raise fail("svd_axes", f"v_int and v_prompt are parallel (|sin angle| = {float(sin):.1e}): they span no "
                               "plane, so the unique axis is undefined")
    if normalize:  # closed form: the left singular vectors of two unit vectors (robust when orthogonal)
        a, b = a / a.norm(), b / b.norm()
        s, t = a + b, a - b
        shared, diff = s / s.norm(), t / t.norm()
        S = torch.stack([s.norm(), t.norm()]) / 2 ** 0.5
    else:
        V = einops.rearrange(torch.stack([a, b]), "k d -> d k")
        U, S, _ = torch.linalg.svd(V.double(), full_matrices=False)
        U, S = U.float(), S.float()
        shared, diff = U[:, 0], U[:, 1]
    if shared @ (a + b) < 0:
        shared = -shared
    if diff @ (a - b) < 0:
        diff = -diff
    return SVDAxes(shared, diff, -diff, S)


def mean_delta(deltas: Float[Tensor, "value d"]) -> tuple[Float[Tensor, " d"], float]:
    """Mean of ``deltas`` (one per value) and the share of their energy along its direction.

    ``explained = sum_s <delta_s, u>^2 / sum_s |delta_s|^2`` with ``u = mean / |mean|``;
    NaN (undefined, not an error) when the mean is the zero vector.
    """
    d = matrix(deltas, "deltas", "mean_delta")
    m = d.mean(0)
    u = m / m.norm()
    return m, float(((d @ u) ** 2).sum() / (d ** 2).sum())


def circumplex_fit(axes: Float[Tensor, "value d"], target_xy: Float[np.ndarray, "value 2"], *,
                   n_permutations: int = 1000, seed: int = 0) -> dict:
    """PCA of value axes to 2-D, Procrustes to the theoretical circle, and a permutation p-value.

    Returns ``{"r2", "p_value", "null_mean", "pca_xy", "explained_variance"}`` with
    ``r2 = 1 - disparity`` (scipy.spatial.procrustes) and the p-value the share of
    label permutations with R² at least as large (add-one smoothed).
    """
    from scipy.spatial import procrustes

    n_permutations = count(n_permutations, "n_permutations", "circumplex_fit")
    x = matrix(axes, "axes", "circumplex_fit", min_rows=3).double()
    if x.shape[1] < 2:
        raise fail("circumplex_fit", f"axes has shape {tuple(x.shape)}: a 2-D PCA needs width d >= 2")
    spread(x.numpy(), "axes", "circumplex_fit")
    target = array2d(target_xy, "target_xy", "circumplex_fit", cols=2)
    if target.shape[0] != x.shape[0]:
        raise MechvalueError(f"target_xy must be [{x.shape[0]}, 2], got {target.shape}")
    spread(target, "target_xy", "circumplex_fit")
    xc = x - x.mean(0)
    U, S, _ = torch.linalg.svd(xc, full_matrices=False)
    pca = (U[:, :2] * S[:2]).numpy()
    r2 = 1.0 - procrustes(target, pca)[2]
    rng = np.random.default_rng(seed)
    null = np.array([1.0 - procrustes(target[rng.permutation(len(target))], pca)[2] for _ in range(n_permutations)])
    return {"r2": float(r2), "p_value": float((1 + (null >= r2).sum()) / (1 + n_permutations)),
            "null_mean": float(null.mean()), "pca_xy": pca,
            "explained_variance": float((S[:2] ** 2).sum() / (S ** 2).sum())}


def random_directions(like: Float[Tensor, " d"], n: int, *, seed: int = 0) -> Float[Tensor, "n d"]:
    """``n`` Gaussian directions with the same norm as ``like`` (matched random-direction control)."""
    like = vector(like, "like", "random_directions")
    n = count(n, "n", "random_directions", minimum=0)
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, like.shape[0], generator=g)
    return r / r.norm(dim=1, keepdim=True) * like.norm()


@dataclass
class PairDecomposition:
    """Orthogonalisation of (intrinsic, prompted) vector pairs, batched over leading axes (methods.md §5.5).

    Attributes:
        intrinsic_perp: ``[..., d]`` ``v_int ⊥ v_prompt``; prompted_perp: ``[..., d]`` ``v_prompt ⊥ v_int``.
        cos: ``[...]`` cosine of the pair; retained_prompted / retained_intrinsic: ``[...]`` the norm
        share each vector keeps after removing the other (``|v_prompt⊥int| / |v_prompt|``...).
        NaN where a vector is zero.
    """

    intrinsic_perp: Float[Tensor, "... d"]
    prompted_perp: Float[Tensor, "... d"]
    cos: Float[Tensor, "..."]
    retained_prompted: Float[Tensor, "..."]
    retained_intrinsic: Float[Tensor, "..."]


def pair_decomposition(v_int: Float[Tensor, "... d"], v_prompt: Float[Tensor, "... d"]) -> PairDecomposition:
    """Both orthogonalisations, the cosine and the retained-norm shares of many pairs at once."""
    a, b = torch.as_tensor(v_int).float(), torch.as_tensor(v_prompt).float()
    if a.shape != b.shape or a.ndim == 0 or a.shape[-1] == 0:
        raise MechvalueError(f"pair_decomposition needs vectors of one shape [..., d] with d >= 1, got "
                             f"{tuple(a.shape)}, {tuple(b.shape)}")
    ab, aa, bb = (a * b).sum(-1), (a * a).sum(-1), (b * b).sum(-1)
    int_perp = a - torch.where(bb > 0, ab / bb, torch.zeros_like(ab))[..., None] * b
    prompt_perp = b - torch.where(aa > 0, ab / aa, torch.zeros_like(ab))[..., None] * a
    nan = torch.full_like(ab, float("nan"))
    cos = torch.where((aa > 0) & (bb > 0), ab / (aa * bb).sqrt(), nan)
    ret_p = torch.where(bb > 0, prompt_perp.norm(dim=-1) / bb.sqrt(), nan)
    ret_i = torch.where(aa > 0, int_perp.norm(dim=-1) / aa.sqrt(), nan)
    return PairDecomposition(int_perp, prompt_perp, cos, ret_p, ret_i)


def cosine_matrix(x: Float[Tensor, "n d"]) -> Float[Tensor, "n n"]:
    """Pairwise cosines of the rows of ``x`` (NaN for a zero row)."""
    x = matrix(x, "x", "cosine_matrix")
    norm = x.norm(dim=1, keepdim=True)
    u = x / torch.where(norm > 0, norm, torch.full_like(norm, float("nan")))
    return u @ u.T


def procrustes_align(points: Float[np.ndarray, "n k"], target: Float[np.ndarray, "n k"]) -> Float[np.ndarray, "n k"]:
    """``points`` moved onto ``target`` (translation, rotation/reflection, uniform scale), in target's frame.

    The same fit as ``scipy.spatial.procrustes`` (so ``1 - SS_res / SS_tot`` of the result against
    ``target`` equals :func:`circumplex_fit`'s R²), but returned in the target's units for plotting.
    """
    from scipy.spatial import procrustes

    p, t = np.asarray(points, dtype=float), np.asarray(target, dtype=float)
    if p.shape != t.shape or p.ndim != 2 or p.shape[0] < 2:
        raise MechvalueError(f"procrustes_align needs two [n, k] arrays (n >= 2), got {p.shape} and {t.shape}")
    for a, name in ((p, "points"), (t, "target")):
        spread(array2d(a, name, "procrustes_align", min_rows=2), name, "procrustes_align")
    _, aligned, _ = procrustes(t, p)
    tc = t - t.mean(0)
    return aligned * np.linalg.norm(tc) + t.mean(0)
