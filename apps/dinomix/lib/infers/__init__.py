from .dinomix import DinoMixInfer

__all__ = ["DinoMixInfer"]
