"""The library run behind `gtag tag`: walking folders (``library``), worker processes and the
Ray backend (``workers``, ``jobs``), the prediction cache (``cache``), the policy on each
prediction (``decision``), the run itself (``tagger``), its options, records and report
(``records``), its messages (``messages``) and how it stops on a signal (``signals``).

Imports: gtag.audio, gtag.genres, gtag.predict, gtag.tags, gtag.config, gtag.exitcodes.
"""
