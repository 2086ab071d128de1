"""How shipped artifacts are rebuilt: the demo family (:mod:`.demo`)."""
