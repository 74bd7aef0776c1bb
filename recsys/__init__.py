"""Reference recommendation models (Two-Tower, DLRM, DCN-V2), their configs and presets, and
a trainer on synthetic data that writes checkpoints the exporters read (needs the 'export' extra:
torch)."""

from tritonstack.extras import require

require(__name__, "export")

# After the check: these import torch.
from tritonstack.recsys.registry import (  # noqa: E402
    ARCHITECTURES,
    Architecture,
    build_from_dict,
    get_architecture,
)

__all__ = ["ARCHITECTURES", "Architecture", "build_from_dict", "get_architecture"]
