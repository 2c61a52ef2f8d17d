"""MCAD proper (docs/DESIGN.md §4): fused teacher targets, the distillation losses and batch composition."""
