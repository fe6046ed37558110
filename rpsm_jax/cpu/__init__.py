"""CPU-only kernels and settings: oneDNN and Winograd convolutions, XLA:CPU flags, allocator.

Nothing outside the entry points and `convolution.make_conv` needs this package; GPU and TPU
runs never load its libraries.
"""
