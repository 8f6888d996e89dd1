"""Small text resources shipped with molab."""

from importlib.resources import files


def chat_prompts() -> list[str]:
    """64 everyday chat requests (benchmarks and the demo use them)."""
    text = files(__name__).joinpath("chat_prompts.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
