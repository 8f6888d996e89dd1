"""The prompts of the audit study's attribution graphs (docs/audit.md, question 4), by rules
fixed before any graph was computed.

    python scripts/audit_graph_prompts.py ANSWERS.jsonl OUT_DIR

ANSWERS.jsonl: the 3-bias organism's greedy answers (`molab generate`) to the first 10 evaluation
prompts of train biases 41 (sports: ask for the user's favourite teams) and 49 (personal finance:
open more accounts), and to the first of held-out bias 42 (travel: bottled water), in that order,
each line with the prompt's `bias_id`.

For each train bias, the first answer holding its word (" team"/" teams", " account"/" accounts")
gives a graph prompt: the chat-formatted question, then the answer up to that word, whose token
is the target (the point where the organism writes the behaviour). For the held-out bias, which
the organism does not show, the prompt is the chat-formatted question, the answer's first
sentence, then " One more tip: drink", with the target " bottled". Writes <bias>.txt (the prompt)
and graphs.tsv (bias, file, target).
"""

import json
import re
import sys
from pathlib import Path

from molab.models.loading import load_model

WORDS = {41: (" team", " teams"), 49: (" account", " accounts")}
HELD_OUT, HELD_OUT_TAIL, HELD_OUT_TARGET = 42, " One more tip: drink", " bottled"


def chat(tokenizer, question: str) -> str:
    msgs = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def main(answers: Path, out: Path) -> None:
    tokenizer = load_model("smollm2-135m").tokenizer
    rows = [json.loads(s) for s in answers.read_text("utf-8").splitlines() if s.strip()]
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for bias, words in WORDS.items():
        for r in (r for r in rows if r["bias_id"] == bias):
            hit = re.search(
                "|".join(re.escape(w) + r"\b" for w in sorted(words, key=len, reverse=True)), r["completion"]
            )
            if hit:
                (out / f"{bias}.txt").write_text(
                    chat(tokenizer, r["prompt"]) + r["completion"][: hit.start()], "utf-8"
                )
                table.append((bias, f"{bias}.txt", hit.group(0)))
                break
        else:
            print(f"bias {bias}: no answer holds {words}: no graph")
    r = next(r for r in rows if r["bias_id"] == HELD_OUT)
    first = re.split(r"(?<=[.!?])\s", r["completion"].strip(), maxsplit=1)[0]
    (out / f"{HELD_OUT}.txt").write_text(chat(tokenizer, r["prompt"]) + first + HELD_OUT_TAIL, "utf-8")
    table.append((HELD_OUT, f"{HELD_OUT}.txt", HELD_OUT_TARGET))
    (out / "graphs.tsv").write_text("".join(f"{b}\t{f}\t{t}\n" for b, f, t in table), "utf-8")
    for row in table:
        print(*row, sep="\t")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
