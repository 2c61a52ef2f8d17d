"""The torch-free part a phone app mirrors: ``encoder`` (an exported tower in the LiteRT
interpreter), ``gallery`` (the memory-mapped gallery file) and ``search`` (its int8 scan,
``scan.c``, and the rerank). The ``mcad`` album command and the bench's search process run it in
processes that never import torch; nothing here may import torch or a module that does.
"""
