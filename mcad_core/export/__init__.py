"""The trained student to TFLite (``tflite``, ``pipeline``) and the on-device style benchmark of the
exported files (``bench``, its fresh-process ``bench_worker``). What the files run in is
:mod:`mcad_core.runtime`.
"""
