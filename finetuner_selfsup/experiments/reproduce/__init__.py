"""Reproduce the tutorial's hit@k table: ``finetuner-selfsup reproduce`` and ``demo``.

* :mod:`.settings` -- every knob of a run, with the tutorial's and the demo's presets;
* :mod:`.backbones` -- the embedding models the columns start from;
* :mod:`.columns` -- one function per column of the table, each a chain of ``ft.fit`` calls;
* :mod:`.runner` -- runs the columns, resumes after an interruption, writes the results.
"""
