"""``mechvalue models``: the supported families, the backend each loads with, hooks, the papers' layers."""

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
