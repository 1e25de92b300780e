from .minority_uncertainty import MinorityUncertainty

__all__ = ["MinorityUncertainty"]
