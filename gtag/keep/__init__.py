"""What gtag wrote, and the way back: the undo journal that records every write before the file
changes (``journal``), `gtag undo` (``undo``) and applying a reviewed report (``review``).

Imports: gtag.tags and gtag.run (file identity, folder walk, the cache's location), and
gtag.exitcodes and gtag.output for its messages.
"""
