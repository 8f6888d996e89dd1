"""Training and evaluation data: synthetic documents for mid-training (`documents`), chat
prompts (`prompts`), and the SFT and DPO sets made from them (`chats`). Each generator is a
pipeline stage writing files into the run directory; later stages only read those files.
"""
