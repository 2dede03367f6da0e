"""Scheduled retraining: the reservoir of recent normal windows (:mod:`~aestream.retrain.reservoir`), the stage
that feeds it (:mod:`~aestream.retrain.stage`), one retrain run (:mod:`~aestream.retrain.retrainer`), the lock between
trainers (:mod:`~aestream.retrain.lock`) and the APScheduler edge (:mod:`~aestream.retrain.scheduler`)."""
