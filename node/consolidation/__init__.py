"""Memory that grows into knowledge: consolidation into facts, salience and skills (SPEC-006 §12).

A feature package: ``feature`` wires the job into the node, ``routes`` and ``cli`` are its
surfaces; ``answer`` validates what a cortex says before ``job`` writes anything.
"""
