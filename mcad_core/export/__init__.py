"""TFLite export of the student and its on-device style benchmark.

Kept import-light (no torch at module level) so the benchmark's search process
can load the runtime pieces without torch, as a phone app would.
"""
