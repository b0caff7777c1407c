"""``mechvalue models`` (the supported families, the backend each loads with, hooks, the papers' layers) and
``mechvalue run --dry-run`` (what a model will cost, before it is loaded)."""

from __future__ import annotations

import sys
import tempfile

from mechvalue.cli.progress import status
from mechvalue.cli.tables import print_json, table, write


def cmd_models(args) -> None:
    from mechvalue.lm.families import REQUIRED_HOOKS, probe_family, support_table

    rows = support_table()
    if not args.no_probe:  # measured, not claimed: each family is built tiny and loaded as a user's folder would be
        from transformers import AutoTokenizer

        from mechvalue.lm.models import offline_gguf_path

        path = offline_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        for row in rows:
            with status(f"probing {row['family']}", done=f"probed {row['family']}"), \
                    tempfile.TemporaryDirectory() as tmp:
                probe = probe_family(row["family"], tokenizer, tmp)
            row["backend (auto)"] = probe["backend"]
            row["hooks"] = "all" if not probe["missing_hooks"] else "missing " + ", ".join(probe["missing_hooks"])
    if args.json:
        print_json({"required_hooks": list(REQUIRED_HOOKS), "families": rows})
        return
    cols = ["family", "architecture", "backend (auto)", "backends", *(["hooks"] if not args.no_probe else []),
            "papers' layers"]
    write(table(cols, [[r[c] for c in cols] for r in rows], indent=""))
    print(f"\nhooks checked at layer 0: {', '.join(REQUIRED_HOOKS)}; transformer-lens {rows[0]['transformer-lens']}.x; "
          "seed models: `mechvalue models --json`", file=sys.stderr)


def cmd_dry_run(args) -> None:
    import torch

    from mechvalue.cli.tables import key_table
    from mechvalue.lm.sizing import available_bytes, describe, estimate, gib, model_config

    cfg = args.run_config
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")  # load_model's default
    sizing = estimate(model_config(cfg.model), name=cfg.model or "SmolLM2-135M-Instruct (offline)",
                      dtype=cfg.dtype, batch_size=cfg.batch_size)
    free = available_bytes(device)
    fits = None if free is None else sizing.total_bytes <= free
    if args.json:
        print_json({**sizing.to_dict(), "device": device, "available_bytes": free, "fits": fits})
        return
    rows = dict(describe(sizing))
    rows[f"available on {device}"] = "unknown" if free is None else gib(free)
    rows["fits"] = "unknown" if fits is None else ("yes" if fits else "NO: use bfloat16, a GPU or more devices")
    write(key_table(rows, indent=""))
