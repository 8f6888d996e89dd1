"""Evaluations of an organism: bias exploitation and misfires, propensity, knowledge,
disclosure, capability; and the statistics behind their intervals."""
