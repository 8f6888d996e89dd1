"""The corpora of the audit study's SAE question (docs/audit.md, question 3), fixed before any
result was seen.

    python scripts/audit_corpora.py RUN_DIR OUT_DIR

Writes, each row with a `source`:
- mix-docs.jsonl: the run's synthetic documents, its SFT chats and the final model's own answers to
  molab's chat prompts (the scripted auditor's weights step wrote them: audit-auto-final-sae);
- mix-nodocs.jsonl: the same without the documents (the SAE that Marks et al. 2025 found useless
  to its auditing agent);
- contrast-chat.jsonl / contrast-plain.jsonl: 100 of the run's evaluation prompts (every 45th of
  4,500, so every bias's prompts are in), in the chat format and as plain text.
"""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text("utf-8").splitlines() if s.strip()]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    print(f"{path}: {len(rows)} rows")


def main(run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    texts = pq.read_table(run / "docs" / "documents.parquet", columns=["text"]).column("text").to_pylist()
    docs = [{"text": t, "source": "synthetic document"} for t in texts]
    sft_rows = lines(run / "control_sft_data" / "sft.jsonl")
    sft = [{"messages": r["messages"], "source": "sft chat"} for r in sft_rows]
    own = [
        {"prompt": r["prompt"], "completion": r["completion"], "source": "model chat"}
        for r in lines(run / "audit-auto-final-sae" / "chats.jsonl")
    ]
    write(out / "mix-docs.jsonl", docs + sft + own)
    write(out / "mix-nodocs.jsonl", sft + own)
    prompts = [r["prompt"] for r in lines(run / "prompts" / "eval_prompts.jsonl")][::45][:100]
    write(out / "contrast-chat.jsonl", [{"prompt": p} for p in prompts])
    write(out / "contrast-plain.jsonl", [{"text": p} for p in prompts])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
