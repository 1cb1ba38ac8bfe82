#!/usr/bin/env python
"""Django's command-line utility for the demo site."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proyecto.settings")
    from django.core.management import execute_from_command_line

    import proyecto  # noqa: F401  (puts src/ on the path in a checkout)

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
