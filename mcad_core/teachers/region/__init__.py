"""The embedded single-stream teacher built on region (object) tokens, VinVL-style.

``segment`` (colour segmentation) and ``tokenizer`` are torch-free; ``teacher``
(``RegionCrossEncoder``, the ``CrossEncoderTeacher``) and ``train``
(``train_region_teacher``) import torch, so import them where they are needed.
"""
