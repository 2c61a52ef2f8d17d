"""The pipeline's outputs, relative to the repository root: named once here, used by the stages and
scripts. ``dvc.yaml`` must declare the same paths (DVC reads no Python); ``tests/test_dvc_deps.py``
checks that every declared output is one of these."""

from pathlib import Path

PREPARED = Path("data/prepared")
CACHE = Path("data/cache")
FUSED = Path("data/fused")
TEACHERS = Path("models/teachers")
STUDENTS = Path("models/student")            # one folder per variant
CHECKPOINTS = Path("models/checkpoints")     # resume state, not a DVC output
TFLITE = Path("models/tflite")

_REPORTS = Path("reports")
DATA_CARD = _REPORTS / "data.json"
CONTACT_SHEET = _REPORTS / "contact_sheet.png"
TEACHERS_REPORT = _REPORTS / "teachers.json"
FUSE_REPORT = _REPORTS / "fuse.json"
LIVE = _REPORTS / "live"                      # DVCLive curves, one folder per variant
RESULTS_JSON = _REPORTS / "results.json"
RESULTS_MD = _REPORTS / "results.md"
METRICS = _REPORTS / "metrics.json"
MINING = _REPORTS / "mining.json"
RECALL_ROWS = _REPORTS / "plots/recall.json"
RECALL_PNG = _REPORTS / "recall.png"
TWINS_PNG = _REPORTS / "twins.png"
EXPORT_REPORT = _REPORTS / "export.json"
EXPORT_METRICS = _REPORTS / "export_metrics.json"
LATENCY = _REPORTS / "latency.json"
SEARCH_METRICS = _REPORTS / "search_metrics.json"
SEARCH_LATENCY_ROWS = _REPORTS / "plots/search_latency.csv"
SEARCH_LATENCY_PNG = _REPORTS / "search_latency.png"
