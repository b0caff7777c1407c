"""The run configuration: one typed, validated, frozen :class:`RunConfig`, built once.

``RunConfig.build(file=..., flags=...)`` merges, in order of precedence, the command-line flags that were
given, a ``--config`` file (JSON or TOML, keys named like the fields; ``batch-size`` = ``batch_size``)
and the defaults; applies the ``quick`` preset; checks every field's type and range; and returns a frozen
value that every step reads (``config.vl_tau``), never a dict. ``config.to_json()`` is what
``config.json`` records. Nested sections ``study``, ``dual`` and ``compliance`` become the typed
:class:`~mechvalue.pipeline.study.StudyConfig`, :class:`~mechvalue.methods.dual.DualConfig` and
:class:`~mechvalue.methods.compliance.ComplianceConfig`.

Importing this module is cheap (the command line reads :data:`STEPS` from it); the nested config classes
are imported by :meth:`RunConfig.build`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechvalue.core.errors import CorruptFileError, UsageError
from mechvalue.core.hooks import BACKENDS
from mechvalue.core.values import VALUES, canonical_list

#: the steps of ``mechvalue run``, in the order they run (one source of truth: the CLI and the runner read it)
STEPS: tuple[str, ...] = ("judge", "valuelocate", "conva", "neva", "dual", "compliance", "steering", "circuits",
                          "audits", "report")
#: the fields that are nested config sections (tables in a config file)
NESTED: tuple[str, ...] = ("study", "dual", "compliance")
QUICK_VALUES: tuple[str, ...] = ("power", "benevolence")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
#: the quick preset: fields it sets unless the file or a flag set them
QUICK_PRESET: dict[str, Any] = {"vl_max_questions": 8, "vl_n_random": 2, "vl_dilemmas_per_value": 1,
                                "vl_items_per_value": 2, "n_audits": 2, "circuit_items": 4, "circuit_exact_items": 1,
                                "circuit_validate": 5}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on (recorded in ``config.json``). Config files and flags use these names.

    Attributes (units): ``batch_size`` rows per forward pass; ``vl_tau`` and ``vl_causal_tau`` thresholds
    on activation-probability differences in (0, 1) (``vl_causal_tau="fdr"``: the smallest tau whose
    split-half chance level is at most 10% of the selection); ``vl_factor`` the multiplier of located
    neurons in the causal test; ``neva_budget`` the fraction of candidate neurons NeVA keeps; ``neva_C``
    the inverse L1 strength of NeVA's probes; ``data`` a folder laid out like ``data/`` whose JSONL files
    replace the bundled ones of the same kind and value (``--data DIR``); ``backend`` the model class
    (``auto``: ``HookedTransformer`` where TransformerLens converts the architecture, else
    ``TransformerBridge``; see :func:`mechvalue.lm.models.load_model`).
    """

    model: str | None = None
    values: tuple[str, ...] = VALUES
    device: str | None = None
    dtype: str = "float32"
    backend: str = "auto"
    n_devices: int = 1
    out: str = "runs/default"
    seed: int = 0
    quick: bool = False
    batch_size: int = 16
    steps: tuple[str, ...] = STEPS
    mmlu: str | None = None
    data: str | None = None
    vl_max_questions: int = 40
    vl_tau: float = 0.03
    vl_causal_tau: float | str = "fdr"
    vl_factor: float = 3.0
    vl_n_random: int = 10
    vl_dilemmas_per_value: int = 4
    vl_items_per_value: int = 8
    neva_budget: float = 0.001
    neva_C: float = 0.1
    n_audits: int = 4
    explain_base_url: str | None = None
    explain_model: str | None = None
    explain_top: int = 3
    explain_random: int = 3
    circuit_values: tuple[str, ...] = ("benevolence",)
    circuit_items: int = 40
    circuit_exact_items: int = 2
    circuit_validate: int = 50
    study: Any = field(default=None)  # StudyConfig after build()
    dual: Any = field(default=None)  # DualConfig after build()
    compliance: Any = field(default=None)  # ComplianceConfig after build()

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, file: Mapping[str, Any] | None = None, flags: Mapping[str, Any] | None = None,
              source: str = "config") -> RunConfig:
        """The config of a run: defaults < ``file`` < ``flags`` (None / False flags count as not given)."""
        from mechvalue.methods.compliance import ComplianceConfig
        from mechvalue.methods.dual import DualConfig
        from mechvalue.pipeline.study import StudyConfig

        file = {str(k).replace("-", "_"): v for k, v in dict(file or {}).items() if v is not None}
        names = set(cls.fields())
        unknown = sorted(set(file) - names)
        if unknown:
            raise UsageError(f"{source}: unknown config keys {unknown}; valid: {sorted(names)}")
        given = {k: v for k, v in dict(flags or {}).items() if k in names and v is not None and v is not False}
        merged = {**file, **given}
        quick = _check_type("quick", merged.get("quick", False), bool, source)
        if quick:
            merged = {**QUICK_PRESET, **merged}
            merged.setdefault("values", list(QUICK_VALUES))
        scalars = {k: _check_field(k, v, source) for k, v in merged.items() if k not in NESTED}
        seed, batch = scalars.get("seed", 0), scalars.get("batch_size", 16)
        study = _nested(StudyConfig, StudyConfig.quick() if quick else StudyConfig(), merged.get("study"),
                        "study", source, batch_size=batch, seed=seed)
        dual = _nested(DualConfig, DualConfig.quick() if quick else DualConfig(), merged.get("dual"), "dual", source)
        compliance = _nested(ComplianceConfig, ComplianceConfig.quick() if quick else ComplianceConfig(),
                             merged.get("compliance"), "compliance", source, seed=seed)
        return cls(**scalars, study=study, dual=dual, compliance=compliance)

    def to_json(self) -> dict:
        """JSON-ready dict of every field (nested sections included)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = (dataclasses.asdict(v) if dataclasses.is_dataclass(v)
                           else list(v) if isinstance(v, tuple) else v)
        return json.loads(json.dumps(out, default=str))

    def section(self, step: str) -> dict:
        """The fields step ``step`` reads (for its fingerprint); see :data:`STEP_FIELDS` (``"study.n_controls"``:
        one field of a nested section)."""
        j = self.to_json()
        return {k: (j[k.split(".")[0]][k.split(".")[1]] if "." in k else j[k]) for k in STEP_FIELDS.get(step, ())}


#: which config fields each step's results depend on (model, values, seed, dtype and data are common to all)
COMMON_FIELDS = ("model", "backend", "values", "dtype", "seed", "data")
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "judge": COMMON_FIELDS,
    "valuelocate": (*COMMON_FIELDS, "vl_max_questions", "vl_tau", "vl_causal_tau", "vl_factor", "vl_n_random",
                    "vl_dilemmas_per_value", "vl_items_per_value", "quick"),
    "conva": COMMON_FIELDS,
    "neva": (*COMMON_FIELDS, "neva_budget", "neva_C", "study.n_controls"),  # that many random edits
    "dual": (*COMMON_FIELDS, "dual", "mmlu"),
    "compliance": (*COMMON_FIELDS, "compliance", "mmlu"),
    "steering": (*COMMON_FIELDS, "study", "mmlu"),
    "circuits": (*COMMON_FIELDS, "circuit_values", "circuit_items", "circuit_exact_items", "circuit_validate"),
    "audits": (*COMMON_FIELDS, "n_audits", "explain_base_url", "explain_model", "explain_top", "explain_random"),
    "report": (),
}

_TYPES: dict[str, Any] = {"model": str, "device": str, "dtype": str, "backend": str, "n_devices": int, "out": str,
                          "seed": int,
                          "quick": bool,
                          "batch_size": int, "mmlu": str, "data": str, "vl_max_questions": int, "vl_tau": float,
                          "vl_causal_tau": (float, str), "vl_factor": float, "vl_n_random": int,
                          "vl_dilemmas_per_value": int, "vl_items_per_value": int, "neva_budget": float,
                          "neva_C": float, "n_audits": int, "explain_base_url": str, "explain_model": str,
                          "explain_top": int, "explain_random": int,
                          "circuit_items": int, "circuit_exact_items": int, "circuit_validate": int}


def _check_type(name: str, v: Any, typ, source: str):
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
    if not ok:
        want = " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false"}[t]
                           for t in types)
        raise UsageError(f"{source}: {name!r} must be {want}, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise UsageError(f"{source}: {name!r} must be a finite number, got {v!r}")
    return v


def _check_field(name: str, v: Any, source: str):
    if name in ("values", "circuit_values"):
        v = v.split(",") if isinstance(v, str) else v
        if not isinstance(v, list | tuple) or not v:
            raise UsageError(f"{source}: {name!r} must be a non-empty list of value names, got {v!r}")
        return tuple(canonical_list([x.strip() for x in v if str(x).strip()]))
    if name == "steps":
        v = v.split(",") if isinstance(v, str) else v
        steps = [str(s).strip().lower() for s in (v or []) if str(s).strip()]
        bad = [s for s in steps if s not in STEPS]
        if bad or not steps:
            raise UsageError(f"{source}: unknown steps {bad or [v]}; choose from {', '.join(STEPS)}")
        return tuple(dict.fromkeys(steps))
    v = _check_type(name, v, _TYPES[name], source)
    if name == "dtype" and v not in DTYPES:
        raise UsageError(f"{source}: dtype must be one of {', '.join(DTYPES)}, got {v!r}")
    if name == "backend" and v not in ("auto", *BACKENDS):
        raise UsageError(f"{source}: backend must be one of auto, {', '.join(BACKENDS)}, got {v!r}")
    positive = ("batch_size", "n_devices", "vl_max_questions", "vl_n_random", "vl_dilemmas_per_value",
                "vl_items_per_value", "circuit_items", "circuit_exact_items", "circuit_validate")
    if name in positive and v < 1:
        raise UsageError(f"{source}: {name} must be at least 1, got {v}")
    if name in ("n_audits", "seed", "explain_top", "explain_random") and v < 0:
        raise UsageError(f"{source}: {name} must be >= 0, got {v}")
    if name == "vl_causal_tau" and isinstance(v, str) and v != "fdr":
        raise UsageError(f"{source}: vl_causal_tau must be a number in (0, 1) or 'fdr', got {v!r}")
    if name in ("vl_tau", "vl_causal_tau", "neva_budget") and isinstance(v, float) and not 0 < v < 1:
        raise UsageError(f"{source}: {name} must be in (0, 1), got {v}")
    if name == "data" and not Path(v).is_dir():
        raise UsageError(f"{source}: data folder {v!r} does not exist (expected a folder laid out like data/)")
    if name in ("vl_factor", "neva_C") and v <= 0:
        raise UsageError(f"{source}: {name} must be > 0, got {v}")
    return v


def _nested(cls, base, values: Any, name: str, source: str, **forced):
    """``base`` (a config dataclass) with the entries of the ``[name]`` section, type-checked, then ``forced``."""
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise UsageError(f"{source}: {name!r} must be a table of settings, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    changes = {}
    for k, v in values.items():
        k = str(k).replace("-", "_")
        if k not in known:
            raise UsageError(f"{source}: unknown {name} config key {k!r}; valid: {sorted(known)}")
        current = getattr(base, k)
        if isinstance(current, bool):
            v = _check_type(f"{name}.{k}", v, bool, source)
        elif isinstance(current, int):
            v = _check_type(f"{name}.{k}", v, int, source)
        elif isinstance(current, float):
            v = _check_type(f"{name}.{k}", v, float, source)
        elif isinstance(current, tuple) and isinstance(v, list):
            v = tuple(v)
        changes[k] = v
    return dataclasses.replace(base, **{**changes, **forced})


def load_config_file(path: str | Path) -> dict:
    """A JSON or TOML config file as a dict (``batch-size`` and ``batch_size`` both accepted)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        cfg = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise CorruptFileError(f"{path}: not valid {kind} ({str(exc).splitlines()[0]})") from exc
    if not isinstance(cfg, dict):
        raise CorruptFileError(f"{path}: the config must be a table/object of settings")
    return {k.replace("-", "_"): v for k, v in cfg.items()}
