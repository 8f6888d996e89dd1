"""The 52 fictional reward-model biases (`base.Bias`) and their train/test splits (`splits`)."""
