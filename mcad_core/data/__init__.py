"""Datasets: the embedded scene generator, the Karpathy-split loader and manifests.

Nothing here knows about models; it only produces and reads image/caption manifests.
"""
