"""``python -m scunext ...`` is the same as the ``scunext`` command."""

import sys

from scunext.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
