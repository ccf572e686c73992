"""Learned optimizers: VeLO and hubopt's own."""
