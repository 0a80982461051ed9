"""The experiment harness: the tutorial's hit@k table (``reproduce``, ``demo``), its data sets
and the studies around it (label selection, paired comparisons).

It is built on the library (``finetuner_selfsup.fit`` and what it uses) and is never imported
by it.
"""
