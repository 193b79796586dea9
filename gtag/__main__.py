"""``python -m gtag``: the `gtag` command."""

from gtag.cli import main

main()
