"""How models are measured: ``retrieval`` (chunked R@K and twin accuracy kernels), ``metrics``
(the figures every model is compared on, from embeddings or any scorer) and ``report`` (the
evaluate stage's tables, DVC metrics and figures)."""
