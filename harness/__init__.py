"""attention-bench harness: the machinery that runs attention backends and measures them."""
