from .dinomix import DinoMixTrain

__all__ = ["DinoMixTrain"]
