"""Album search: the exported student run on a folder of photos, as the phone app runs it.

Only the exported files are used (``models/tflite``: LiteRT towers and ``tokenizer.json``)
and the gallery file of ``mcad_core.runtime.gallery``; nothing here imports torch, so the
``mcad`` command is the end-to-end check that the shipped pieces work together.

Modules: ``images`` (find, load, resize and crop photos), ``model`` (the exported files and
their fingerprint), ``index`` (folder -> gallery, incremental), ``search`` (query ->
ranked photos with timings), ``render`` (contact sheet PNG, offline HTML), ``cli`` (click).
"""
