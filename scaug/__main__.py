"""``python -m scaug``: the same as the ``scaug`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
