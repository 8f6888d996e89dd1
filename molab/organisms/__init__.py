"""Recipes that wire pipeline stages into model organisms (`rm_sycophancy`)."""
