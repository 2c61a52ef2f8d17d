"""Helpers only the scripts in ``scripts/`` use (no stage imports them): the scale rehearsal and the
tuning and ablation reports. Kept out of ``mcad_core``, the library the pipeline runs."""
