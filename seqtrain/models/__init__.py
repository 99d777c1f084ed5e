"""Layers (recurrent stacks, init schemes, sampling) and the models built from them."""
