"""The pipeline's folder layout (as dvc.yaml declares it), relative to the repository root."""

from pathlib import Path

PREPARED = Path("data/prepared")
CACHE = Path("data/cache")
FUSED = Path("data/fused")
TEACHERS = Path("models/teachers")
STUDENTS = Path("models/student")
CHECKPOINTS = Path("models/checkpoints")
TFLITE = Path("models/tflite")
