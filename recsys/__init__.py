"""Reference recommendation models (Two-Tower, DLRM, DCN-V2), their configs and presets, and
a trainer on synthetic data that writes checkpoints the exporters read."""

from tritonstack.recsys.registry import ARCHITECTURES, Architecture, build_from_dict, get_architecture

__all__ = ["ARCHITECTURES", "Architecture", "build_from_dict", "get_architecture"]
