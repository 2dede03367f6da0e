"""Training: reading files of normal data (:mod:`~aestream.training.datasets`), fitting an autoencoder
(:mod:`~aestream.training.fit`), building a calibrated bundle (:mod:`~aestream.training.build`, and from a sample
of windows :mod:`~aestream.training.from_windows`) and the gate a candidate must
pass (:mod:`~aestream.training.gate`)."""
