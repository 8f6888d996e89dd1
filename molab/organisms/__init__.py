"""Recipes that wire pipeline stages into model organisms (and, for now, the demo)."""
