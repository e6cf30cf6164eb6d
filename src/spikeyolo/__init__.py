"""spikeyolo: spiking-neural-network object detection in the SpikeYOLO style (ECCV 2024)."""

__version__ = "0.1.0"
