"""Training: reading files of normal data (:mod:`~aestream.training.datasets`), fitting an autoencoder
(:mod:`~aestream.training.fit`), building a calibrated bundle from segments or from a sample of windows
(:mod:`~aestream.training.build`), fine-tuning a sensor's own model (:mod:`~aestream.training.finetune`) and the
gate a candidate must pass (:mod:`~aestream.training.gate`)."""
