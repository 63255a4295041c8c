import sys

from demix.cli import main

sys.exit(main())
