"""Training stages (mid-training, SFT, DPO) on transformers, PEFT, TRL and accelerate.

`config.py` holds one config per stage, `data.py` reads and checks the data contracts,
`adapters.py` stacks and merges LoRA adapters, `resume.py` keeps checkpoints across kills,
`callbacks.py` writes per-step metrics and stops on NaN, `stages.py` runs a stage, and
`bench.py` times the trainer against a plain PyTorch loop. `steer_vector.py` trains one
steering vector on the frozen model (an adapter's control). See docs/training.md.
"""
