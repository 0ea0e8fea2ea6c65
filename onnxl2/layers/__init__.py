"""What each kind of layer is: how its weight maps onto rows and input moments (``layouts``),
which input it multiplies, its bias, how it is factorised and emitted (one adapter per reader
kind), and the moments type the lossy stages share (``moments``)."""
