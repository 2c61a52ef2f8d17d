"""The phone-sized student: ``config`` (architectures as JSON data, ``configs/``), ``layers`` shared
by the towers, ``model`` (the from-scratch towers, the student folder, encoding), ``pretrained``
(EfficientNet-Lite0 and BERT towers loaded offline) and ``tokenizer`` (what the phone app ships).

``tokenizer`` and ``config`` import no torch: the album command reads the exported tokenizer.
"""
