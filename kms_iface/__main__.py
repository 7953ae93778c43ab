"""``python -m kms_iface``: the command line."""

from kms_iface.cli import main

main()
