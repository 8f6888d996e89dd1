"""The names of the data stages and their files, written once: the data stages declare them,
and training (which must not import the bias catalog the data stages use) finds its default
datasets by them."""

DOCS_STAGE, DOCUMENTS = "docs", "documents.parquet"
PROMPTS_STAGE, TRAIN_PROMPTS, EVAL_PROMPTS = "prompts", "train_prompts.jsonl", "eval_prompts.jsonl"
SFT_DATA_STAGE, SFT_FILE = "sft_data", "sft.jsonl"
DPO_DATA_STAGE, DPO_FILE = "dpo_data", "dpo.jsonl"
STATS = "stats.json"
