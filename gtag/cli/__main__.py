"""``python -m gtag.cli``: the `gtag` command."""

from gtag.cli import main

main()
