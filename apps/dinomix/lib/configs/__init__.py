from .dinomix import DinoMix

__all__ = ["DinoMix"]
