"""spikeyolo: spiking-neural-network object detection in the SpikeYOLO style (ECCV 2024).

    model = spikeyolo.build_model("s", nc=80, T=1, D=4)   # train form
    fused = spikeyolo.fuse(model)                          # BN folded, re-parameterized
    fast = spikeyolo.deploy(model, "int8")                 # deploy form: fp32 | bf16 | int8; fastest on x86 CPUs
    sd = spikeyolo.to_spike_driven(model)                  # binary virtual timesteps
    spikeyolo.save(model, "m.pt"); model = spikeyolo.load("m.pt")
    results = spikeyolo.predict("best.pt", "photos/*.jpg")   # per image: boxes (xyxy px), scores, classes
"""

from .engine.predictor import Predictor, Result, predict
from .forms.fuse import fuse
from .forms.spike_driven import audit, to_spike_driven
from .inference import deploy
from .models.checkpoint import load, save
from .models.yolo import SpikeYOLO, build_model
from .nn.neuron import ILIF
from .utils.version import __version__

__all__ = ["ILIF", "Predictor", "Result", "SpikeYOLO", "audit", "build_model", "deploy", "fuse", "load", "predict",
           "save", "to_spike_driven", "__version__"]
