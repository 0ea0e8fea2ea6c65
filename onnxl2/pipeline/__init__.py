"""One orchestrator per mode (``lossless``, ``fixed`` for uniform bits and replayed plans,
``automatic``), each calling the stages in turn: load (``inputs``), candidates, sensitivity,
allocation, then emit, encode, validate and report (``finish``)."""
