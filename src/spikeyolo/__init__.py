"""spikeyolo: spiking-neural-network object detection in the SpikeYOLO style (ECCV 2024).

    model = spikeyolo.build_model("s", nc=80, T=1, D=4)   # train form
    fused = spikeyolo.fuse(model)                          # BN folded, re-parameterized
    fast = spikeyolo.deploy(model, "bf16")                 # deploy form: fp32 | bf16 (torch), int8 (onnxruntime)
    sd = spikeyolo.to_spike_driven(model)                  # binary virtual timesteps
    spikeyolo.save(model, "m.pt"); model = spikeyolo.load("m.pt")
"""

__version__ = "0.1.0"

from .checkpoint import load, save  # noqa: E402
from .deploy import deploy  # noqa: E402
from .fuse import fuse  # noqa: E402
from .model import SpikeYOLO, build_model  # noqa: E402
from .neuron import ILIF  # noqa: E402
from .spike_driven import audit, to_spike_driven  # noqa: E402

__all__ = ["ILIF", "SpikeYOLO", "audit", "build_model", "deploy", "fuse", "load", "save", "to_spike_driven",
           "__version__"]
