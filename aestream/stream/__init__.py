"""The stream: readings decoded from messages (:mod:`~aestream.stream.codec`), cut into windows per sensor
(:mod:`~aestream.stream.windows`, their count phase in :mod:`~aestream.stream.phase`), the records and outgoing
messages (:mod:`~aestream.stream.messages`), anomaly events (:mod:`~aestream.stream.events`) and the stage
interface the worker hands scored windows to (:mod:`~aestream.stream.stages`)."""
