"""The two teachers behind one interface (``api``): the dual-stream open_clip model (``dual``, trained
by ``dual_train``), the single-stream cross-encoder (``blip`` for real data, ``region`` embedded),
``build`` (train or load, save, load back), ``streaming`` (a teacher over a whole split in bounded
memory) and ``report`` (their test figures)."""
