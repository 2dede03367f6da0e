"""Operations: Prometheus metrics (:mod:`~aestream.ops.metrics`), the worker observer that feeds them
(:mod:`~aestream.ops.instrument`), the HTTP endpoints
(:mod:`~aestream.ops.server`) and logging (:mod:`~aestream.ops.logs`)."""
