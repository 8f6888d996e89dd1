"""Training and evaluation data: synthetic documents for mid-training (`documents`), chat
prompts (`prompts`), and the post-training sets made from them (`sft`, `dpo`, sharing
`chats`). Each generator is a pipeline stage writing files into the run directory; later
stages only read those files.
"""
