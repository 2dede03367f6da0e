"""Output streams beyond anomaly events: the denoised signal and the latent codes, with the latent record codec
(:mod:`~aestream.outputs.streams`)."""
