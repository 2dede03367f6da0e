"""Detection: preprocessing (:mod:`~aestream.detect.features`), scoring a batch of windows with a model
(:mod:`~aestream.detect.scoring`), thresholds and the alarm rule (:mod:`~aestream.detect.thresholds`)."""
