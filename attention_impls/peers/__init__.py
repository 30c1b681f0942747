"""The implementations people run, driven on our q, k, v beside ours: HuggingFace transformers'
Longformer, BigBird and Reformer attention cores and lucidrains' packages. Each is an optional
dependency (``pip install -e '.[peers]'``): where its package is missing the backend still
registers and its rows are skipped with the reason (``optional.missing``). A peer declares
``implementation`` (its package) and is checked against the dense reference of the pattern it
implements; each module says how our parameters map onto the peer's and what deviates.

One import line per module, in listing order.
"""

# ruff: noqa: F401, I001
from attention_impls.peers import hf_longformer
from attention_impls.peers import hf_bigbird
from attention_impls.peers import hf_reformer
from attention_impls.peers import lucidrains_local
from attention_impls.peers import lucidrains_performer
from attention_impls.peers import lucidrains_nystrom
