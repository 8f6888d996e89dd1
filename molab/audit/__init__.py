"""The audit toolkit: what an auditor uses to find an organism's hidden objective.

Training-data search (`search`), black-box probes (`probe`), sparse autoencoders and their
feature views (`sae`), steering and ablation (`steer`), after the tools of the blind auditing
game in Marks et al. 2025, "Auditing Language Models for Hidden Objectives". Each runs on any
model spec (with adapters) and, where it needs them, a run's training sets or any corpus.
Generic: nothing here imports the bias catalog; an organism's ground truth reaches an audit
only through the organism.
"""
