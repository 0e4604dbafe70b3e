"""guard: an inference-time safety guard for LLM serving.

The package is laid out along the data flow of one guarded generation::

    request -> upstream (stream) -> tracking (Markov state) -> risk (hitting probability)
            -> decision -> relay (client bytes) -> observability (metrics, logs)

``guard.tracking`` and ``guard.risk`` are the pure core (numpy only); everything that does I/O
composes them (``guard.app``, ``guard.upstream``, ``guard.relay``).
"""

__version__ = "0.1.0"
