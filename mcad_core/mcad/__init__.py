"""MCAD proper (DESIGN §4): fused teacher targets, the distillation losses and batch composition."""
