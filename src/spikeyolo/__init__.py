"""spikeyolo: spiking-neural-network object detection in the SpikeYOLO style (ECCV 2024).

    model = spikeyolo.build_model("s", nc=80, T=1, D=4)   # train form
    fused = spikeyolo.fuse(model)                          # BN folded, re-parameterized
    fast = spikeyolo.deploy(model, "bf16")                 # deploy form: fp32 | bf16 (torch), int8 (onnxruntime)
    sd = spikeyolo.to_spike_driven(model)                  # binary virtual timesteps
    spikeyolo.save(model, "m.pt"); model = spikeyolo.load("m.pt")
"""

from .checkpoint import load, save
from .deploy import deploy
from .fuse import fuse
from .model import SpikeYOLO, build_model
from .neuron import ILIF
from .spike_driven import audit, to_spike_driven
from .version import __version__

__all__ = ["ILIF", "SpikeYOLO", "audit", "build_model", "deploy", "fuse", "load", "save", "to_spike_driven",
           "__version__"]
