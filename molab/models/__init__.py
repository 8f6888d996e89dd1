"""Loading models (the offline default, local directories, hub ids, LoRA adapters) and
generating from them (`molab.models.generation`)."""

from molab.models.loading import LoadedModel, ModelSpec, load_model

__all__ = ["LoadedModel", "ModelSpec", "load_model"]
