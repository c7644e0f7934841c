"""ImageWAM on Ovis-U1: the "Yak" MMDiT backbone, its VLM conditioning (AIMv2 vision tower + Qwen3), the 4-channel
autoencoder, the full-width action expert, loading, the demo checkpoint, the torch backend and the export hand-off."""
