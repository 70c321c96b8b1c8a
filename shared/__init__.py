"""Deleting SCVMM VM-instance checkpoints through ARM: requests in, tracked operations, outcome events out."""
